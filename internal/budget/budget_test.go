package budget

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// trickle yields its data a byte at a time, then blocks (here: fails) as a
// client that stopped sending.
type trickle struct {
	data string
	stop error
}

func (t *trickle) Read(p []byte) (int, error) {
	if t.data == "" {
		return 0, t.stop
	}
	p[0], t.data = t.data[0], t.data[1:]
	return 1, nil
}

func TestReadAll(t *testing.T) {
	tests := []struct {
		name    string
		limit   int64
		held    int64 // taken by others
		r       io.Reader
		max     int64
		want    string
		wantErr error
	}{
		{"fits", 100, 0, strings.NewReader("hello"), 10, "hello", nil},
		{"over the per-request max", 100, 0, strings.NewReader("hello world"), 5, "", ErrTooLarge},
		{"budget spent by others", 100, 98, strings.NewReader("hello"), 10, "", ErrBusy},
		{"a trickler holds what it sent", 100, 0, &trickle{data: "abc", stop: io.ErrUnexpectedEOF}, 10, "", io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &Budget{Limit: tc.limit}
			if tc.held > 0 && !b.take(tc.held) {
				t.Fatal("cannot hold")
			}
			data, release, err := b.ReadAll(tc.r, tc.max)
			if !errors.Is(err, tc.wantErr) || string(data) != tc.want {
				t.Fatalf("ReadAll = %q, %v; want %q, %v", data, err, tc.want, tc.wantErr)
			}
			if tc.name == "a trickler holds what it sent" && b.Used() != 3 {
				t.Errorf("a trickler that sent 3 bytes holds %d", b.Used())
			}
			release()
			if b.Used() != tc.held {
				t.Errorf("after release %d bytes held, want %d", b.Used(), tc.held)
			}
		})
	}
}
