// Package relay copies bytes between an authenticated client connection and
// its target connection: the hot path of every TCP service.
//
// Read/write or splice: io.Copy between two *net.TCPConn uses splice(2)
// through a pipe. Measured with bench/relay on a 2-core machine (ping-pong of
// 64-byte messages, and a 64 MiB stream), a read/write loop over a pooled
// 32 KiB buffer used less CPU per small message than splice (16.6 vs 18.4 us
// of relay CPU per round trip) at a slightly higher rate (0.51x vs 0.48x
// direct), while splice streamed bulk data much faster (0.99x vs 0.58x
// direct). So each direction starts with read/write, which suits database
// request/response traffic, and switches to splice once it sees a run of
// reads that fill the whole buffer (a bulk transfer such as COPY or a large
// result), when both ends are plain TCP connections. TLS and wrapped
// connections always use read/write, except a wrapper that implements
// Unwrapper and hands over its socket (the pg connector's server
// connection, once nothing is buffered in it). On Linux, sockets are read
// and written with raw system calls (see sockIO); with them bench/relay
// measured 15.3 us of relay CPU per small round trip (0.53x direct; splice
// 18.3 us, 0.48x) and bulk streams at 1.11x direct (they switch to splice).
//
// Event loop: when both ends are plain sockets (TCP or unix, directly or
// through an Unwrapper), a session is relayed by an epoll loop instead of
// two goroutines (loop_linux.go): one recvfrom and one sendto per message
// and no goroutine wake-ups, like a C proxy. A direction that becomes a
// bulk transfer between TCP sockets moves the session back to goroutines,
// which splice. The loop owns duplicates of the sockets, so a session is
// ended from outside with Close, not by closing its connections.
// The loop blocks in epoll_wait while its sessions are steady, and waits in
// the Go netpoller for a while after a session joins or leaves (a thread
// blocked in epoll_wait loses its P to new sessions' start-up work and
// gets one back through the scheduler at every wake-up;
// BenchmarkShortSessions). The loop is off with GOMAXPROCS=1: blocked in
// epoll_wait it would hold the only P, and new connections would wait for
// the runtime's monitor to take it back. SECRETLESS_RELAY_LOOP=0 in the
// environment turns it off too.
package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
)

// loopEnabled: pairs of plain sockets are relayed in the event loop
// (loop_linux.go). SECRETLESS_RELAY_LOOP=0 keeps every session on
// goroutines, for comparison.
var loopEnabled = os.Getenv("SECRETLESS_RELAY_LOOP") != "0"

// BufferSize is the size of each pooled copy buffer.
const BufferSize = 32 * 1024

var bufPool = sync.Pool{New: func() any { b := make([]byte, BufferSize); return &b }}

// Result reports how one relay ended.
type Result struct {
	ClientToTarget int64 // bytes copied from client to target
	TargetToClient int64 // bytes copied from target to client
	Err            error // first non-EOF error, if any
}

type closeWriter interface{ CloseWrite() error }

// Pipe relays bytes in both directions until both directions have finished,
// then closes both connections (their Close methods, also when the event
// loop relayed their sockets). When one side sends EOF, the write half of
// the other side is closed (half-close), so protocols that signal the end of
// input by shutting down their write side keep working; when that side is a
// tcp.SessionEnder, both connections are closed then. An error in either
// direction closes both connections, so neither goroutine is left blocked.
// Pipe returns only when both copy goroutines have exited.
func Pipe(client, target net.Conn) Result {
	// Both ends are set up before any I/O: an Unwrapper's RelayConn may look
	// at state that its Read changes.
	c, t := newEnd(client), newEnd(target)
	var res Result
	if loopEnabled && c.raw != nil && t.raw != nil && runtime.GOMAXPROCS(0) > 1 {
		r, moved, nc, nt, release := pipeLoop(c, t)
		defer release()
		res = r
		if !moved {
			_ = client.Close()
			_ = target.Close()
			return res
		}
		c, t = nc, nt
	}
	r := pipeGoroutines(c, t)
	res.ClientToTarget += r.ClientToTarget
	res.TargetToClient += r.TargetToClient
	res.Err = r.Err
	_ = client.Close()
	_ = target.Close()
	return res
}

// Close closes c and ends the relay that c is in, if any. Code that ends a
// session from outside Pipe (a shutdown, a timeout) must use it rather
// than c.Close: in the event loop the relay holds duplicates of the
// sockets, which closing c does not touch.
func Close(c net.Conn) error {
	// c first: a relay that has not yet taken c's socket over then fails
	// to, and one that has is already findable by closeSession.
	err := c.Close()
	closeSession(c)
	return err
}

// pipeGoroutines relays with a goroutine per direction, closing c.conn
// and t.conn when done.
func pipeGoroutines(c, t *end) Result {
	var (
		res  Result
		wg   sync.WaitGroup
		once sync.Once
	)
	abort := func(err error) {
		once.Do(func() {
			res.Err = err
			_ = c.conn.Close()
			_ = t.conn.Close()
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		res.TargetToClient = oneWay(c, t, abort)
	}()
	res.ClientToTarget = oneWay(t, c, abort)
	wg.Wait()
	_ = c.conn.Close()
	_ = t.conn.Close()
	return res
}

// end is one side of a relay.
type end struct {
	conn net.Conn  // as given: closed and half-closed through it
	io   net.Conn  // read and written: conn, or the socket under an Unwrapper
	raw  *sockIO   // raw system calls on io, when it is a socket
	r    io.Reader // raw, or io
	w    io.Writer
}

func newEnd(c net.Conn) *end {
	e := &end{conn: c, io: ioConn(c)}
	e.r, e.w = e.io, e.io
	if e.raw = newSockIO(e.io); e.raw != nil {
		e.r, e.w = e.raw, e.raw
	}
	return e
}

// oneWay copies src to dst; on EOF it half-closes dst, on error it aborts.
func oneWay(dst, src *end, abort func(error)) int64 {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	n, err := copyBuffer(dst, src, *bp)
	if err != nil {
		abort(err)
		return n
	}
	if cw, ok := dst.conn.(closeWriter); ok {
		// A peer that has already reset its connection (say, a client that
		// closed while its last bytes were on the way) cannot be told of
		// the EOF: the session simply ends, which is not a failure.
		if cerr := cw.CloseWrite(); cerr != nil && !errors.Is(cerr, syscall.ENOTCONN) {
			abort(cerr)
		}
	} else {
		// Without half-close support the only way to pass EOF on is to close.
		abort(nil)
	}
	if EndsSessionAtEOF(src.conn) {
		abort(nil) // after the half-close, so dst gets its FIN behind the data
	}
	return n
}

// bulkRun is how many consecutive buffer-filling reads switch a direction
// to splice.
const bulkRun = 4

// copyBuffer copies with read/write over buf, switching to io.Copy (splice)
// for the rest of the stream once a bulk transfer shows up and both ends are
// *net.TCPConn. It returns nil at EOF.
func copyBuffer(dst, src *end, buf []byte) (int64, error) {
	var written int64
	full := 0
	_, dstTCP := dst.io.(*net.TCPConn)
	_, srcTCP := src.io.(*net.TCPConn)
	canSplice := dstTCP && srcTCP
	for {
		nr, rerr := src.r.Read(buf)
		if nr > 0 {
			nw, werr := dst.w.Write(buf[:nr])
			written += int64(nw)
			if werr != nil {
				return written, werr
			}
			if nw != nr {
				return written, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return written, nil
			}
			return written, rerr
		}
		if nr == len(buf) {
			full++
		} else {
			full = 0
		}
		if canSplice && full >= bulkRun {
			n, err := io.Copy(dst.io, src.io) // *net.TCPConn.ReadFrom: splice(2)
			return written + n, err
		}
	}
}

// IsClosedErr reports whether err only says a connection was closed, which is
// how most relays end and not worth logging as a failure.
func IsClosedErr(err error) bool {
	return err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}
