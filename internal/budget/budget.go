// Package budget bounds the memory that request bodies read whole (to hash
// or sign them) may hold at once, across all requests of the process. Bytes
// are counted as they arrive, so a client that trickles its body holds only
// what it has sent.
package budget

import (
	"errors"
	"io"
	"sync"
)

// ErrBusy: the budget is spent by other requests.
var ErrBusy = errors.New("too many request bodies are being read at once")

// ErrTooLarge: the body is longer than the limit for one request.
var ErrTooLarge = errors.New("body too large")

// Budget is a count of bytes in use, up to Limit.
type Budget struct {
	Limit int64
	mu    sync.Mutex
	used  int64
}

func (b *Budget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.Limit {
		return false
	}
	b.used += n
	return true
}

func (b *Budget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// Used is the number of bytes held now.
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// ReadAll reads r to its end, at most max bytes, counting them against the
// budget as they arrive. release gives them back and must be called once
// the data is no longer needed (also after an error: it is never nil).
func (b *Budget) ReadAll(r io.Reader, max int64) (data []byte, release func(), err error) {
	var held int64
	release = func() { b.give(held); held = 0 }
	var chunk [32 << 10]byte
	for {
		n, rerr := r.Read(chunk[:])
		if n > 0 {
			if int64(len(data)+n) > max {
				return nil, release, ErrTooLarge
			}
			if !b.take(int64(n)) {
				return nil, release, ErrBusy
			}
			held += int64(n)
			data = append(data, chunk[:n]...)
		}
		if rerr == io.EOF {
			return data, release, nil
		}
		if rerr != nil {
			return nil, release, rerr
		}
	}
}
