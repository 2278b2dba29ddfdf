package relay

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	return connPair(t, "tcp", "127.0.0.1:0")
}

// connPair returns both ends of a stream connection to a new listener at
// network and addr, closed when the test ends.
func connPair(t *testing.T, network, addr string) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	a, err := net.Dial(network, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// bothModes runs f with the event loop relay (where the system has one)
// and with a goroutine per direction.
func bothModes(t *testing.T, f func(t *testing.T)) {
	for _, loop := range []bool{true, false} {
		t.Run(map[bool]string{true: "loop", false: "goroutines"}[loop], func(t *testing.T) {
			old := loopEnabled
			loopEnabled = loop
			t.Cleanup(func() { loopEnabled = old })
			f(t)
		})
	}
}

// TestPipe relays app <-> [client|relay|target] <-> server and checks both
// directions, half-close, and that Pipe returns with the byte counts.
func TestPipe(t *testing.T) {
	bothModes(t, func(t *testing.T) {
		tests := []struct {
			name string
			up   int // bytes app -> server
			down int // bytes server -> app
		}{
			{"empty", 0, 0},
			{"small messages", 100, 200},
			{"bulk up (switches to splice)", 8 << 20, 10},
			{"bulk down (switches to splice)", 10, 8 << 20},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				app, client := tcpPair(t)
				target, server := tcpPair(t)
				up, down := make([]byte, tt.up), make([]byte, tt.down)
				_, _ = rand.Read(up)
				_, _ = rand.Read(down)
				res := make(chan Result, 1)
				go func() { res <- Pipe(client, target) }()

				// The server reads everything until the app's half-close, then
				// answers and closes its write side.
				serverGot := make(chan []byte, 1)
				go func() {
					b, _ := io.ReadAll(server)
					serverGot <- b
					_, _ = server.Write(down)
					_ = server.(*net.TCPConn).CloseWrite()
				}()
				go func() {
					_, _ = app.Write(up)
					_ = app.(*net.TCPConn).CloseWrite()
				}()
				_ = app.SetReadDeadline(time.Now().Add(10 * time.Second))
				appGot, err := io.ReadAll(app)
				if err != nil {
					t.Fatal(err)
				}
				if got := <-serverGot; !bytes.Equal(got, up) {
					t.Fatalf("server got %d bytes, want %d", len(got), len(up))
				}
				if !bytes.Equal(appGot, down) {
					t.Fatalf("app got %d bytes, want %d", len(appGot), len(down))
				}
				r := pipeResult(t, res, "both sides finished")
				if r.ClientToTarget != int64(tt.up) || r.TargetToClient != int64(tt.down) || r.Err != nil {
					t.Fatalf("result %+v", r)
				}
			})
		}
	})
}

// TestPipeWithoutHalfClose: net.Pipe conns cannot half-close, so EOF from
// one side closes both, and Pipe still returns.
func TestPipeWithoutHalfClose(t *testing.T) {
	app, client := net.Pipe()
	target, server := net.Pipe()
	res := make(chan Result, 1)
	go func() { res <- Pipe(client, target) }()
	go func() { _, _ = io.Copy(server, server) }()
	if _, err := app.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(app, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	app.Close()
	pipeResult(t, res, "the client closed")
}

// TestPipeAbortsOnReset: a target that resets makes Pipe close the client
// too, instead of leaving the other direction blocked.
func TestPipeAbortsOnReset(t *testing.T) {
	bothModes(t, func(t *testing.T) {
		app, client := tcpPair(t)
		target, server := tcpPair(t)
		res := make(chan Result, 1)
		go func() { res <- Pipe(client, target) }()
		_ = server.(*net.TCPConn).SetLinger(0)
		server.Close()
		_ = app.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := app.Read(make([]byte, 1)); err == nil {
			t.Fatal("client still open after the target reset")
		}
		pipeResult(t, res, "the target reset")
	})
}

// TestPipeHalfCloseToResetPeer: when one side ends after the other side
// has half-closed and then reset, the half-close that cannot be delivered
// ends the session without an error.
func TestPipeHalfCloseToResetPeer(t *testing.T) {
	bothModes(t, func(t *testing.T) {
		app, client := tcpPair(t)
		target, server := tcpPair(t)
		res := make(chan Result, 1)
		go func() { res <- Pipe(client, target) }()
		_ = app.(*net.TCPConn).CloseWrite()
		_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(server); err != nil {
			t.Fatalf("server did not see the client's EOF: %v", err)
		}
		_ = app.(*net.TCPConn).SetLinger(0)
		app.Close()                       // resets the client leg
		time.Sleep(50 * time.Millisecond) // for the reset to reach the relay's socket
		server.Close()                    // EOF to pass on to the client, who is gone
		if r := pipeResult(t, res, "both sides ended"); r.Err != nil {
			t.Errorf("Pipe error %v, want none", r.Err)
		}
	})
}

// countingConn wraps a connection and counts the calls the relay makes on
// the wrapper; unwrap decides what RelayConn hands out.
type countingConn struct {
	net.Conn
	unwrap          bool
	reads, closes   atomic.Int32
	closeWrites     atomic.Int32
	writesOnWrapper atomic.Int32
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writesOnWrapper.Add(1)
	return c.Conn.Write(p)
}

func (c *countingConn) Close() error { c.closes.Add(1); return c.Conn.Close() }

func (c *countingConn) CloseWrite() error {
	c.closeWrites.Add(1)
	return c.Conn.(*net.TCPConn).CloseWrite()
}

func (c *countingConn) RelayConn() net.Conn {
	if c.unwrap {
		return c.Conn
	}
	return nil
}

var _ Unwrapper = (*countingConn)(nil)

// TestPipeUnwrapper: a wrapper that offers its socket is bypassed for
// reading and writing (so bulk data can be spliced) but still closed and
// half-closed; one that declines is used as it is.
func TestPipeUnwrapper(t *testing.T) {
	bothModes(t, func(t *testing.T) {
		for _, unwrap := range []bool{true, false} {
			t.Run(map[bool]string{true: "unwrapped", false: "declined"}[unwrap], func(t *testing.T) {
				app, client := tcpPair(t)
				raw, server := tcpPair(t)
				target := &countingConn{Conn: raw, unwrap: unwrap}
				down := make([]byte, 4<<20)
				_, _ = rand.Read(down)
				res := make(chan Result, 1)
				go func() { res <- Pipe(client, target) }()
				go func() {
					_, _ = server.Write(down)
					_ = server.(*net.TCPConn).CloseWrite()
				}()
				_ = app.(*net.TCPConn).CloseWrite()
				_ = app.SetReadDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(app)
				if err != nil || !bytes.Equal(got, down) {
					t.Fatalf("app got %d bytes (%v), want %d", len(got), err, len(down))
				}
				r := <-res
				if r.TargetToClient != int64(len(down)) || r.Err != nil {
					t.Fatalf("result %+v", r)
				}
				if unwrap && (target.reads.Load() != 0 || target.writesOnWrapper.Load() != 0) {
					t.Errorf("wrapper used for I/O although it offered its socket: %d reads, %d writes",
						target.reads.Load(), target.writesOnWrapper.Load())
				}
				if !unwrap && target.reads.Load() == 0 {
					t.Error("declining wrapper was bypassed")
				}
				// The event loop half-closes the socket it took over itself.
				wantCW := int32(1)
				if unwrap && loopEnabled && runtime.GOOS == "linux" {
					wantCW = 0
				}
				if target.closeWrites.Load() != wantCW || target.closes.Load() == 0 {
					t.Errorf("wrapper half-closed %d times and closed %d times, want %d and at least 1",
						target.closeWrites.Load(), target.closes.Load(), wantCW)
				}
			})
		}
	})
}

// TestPipeEndsWhenClosed: closing the client from outside (what a forced
// shutdown does) ends a relay whose both directions wait for data, and the
// result says only that the connection was closed.
func TestPipeEndsWhenClosed(t *testing.T) {
	bothModes(t, func(t *testing.T) {
		_, client := tcpPair(t)
		target, _ := tcpPair(t)
		res := make(chan Result, 1)
		go func() { res <- Pipe(client, target) }()
		time.Sleep(50 * time.Millisecond) // both directions are waiting
		_ = Close(client)
		wantClosed(t, res)
	})
}

// wantClosed waits for Pipe's result after a Close and checks that it
// says only that the connection was closed.
func wantClosed(t *testing.T, res <-chan Result) {
	t.Helper()
	if r := pipeResult(t, res, "Close"); !IsClosedErr(r.Err) {
		t.Errorf("error %v, want a closed-connection error", r.Err)
	}
}

// pipeResult waits up to 5 s for Pipe's result, failing the test with
// what should have ended the relay.
func pipeResult(t *testing.T, res <-chan Result, after string) Result {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("Pipe did not return after %s", after)
		return Result{}
	}
}

// TestSockIO: raw reads and writes report EOF, resets and closed
// connections as net.Conn does.
func TestSockIO(t *testing.T) {
	t.Run("data and EOF", func(t *testing.T) {
		a, b := tcpPair(t)
		s := newSockIO(b)
		if s == nil {
			t.Skip("no raw socket I/O on this system")
		}
		go func() { _, _ = a.Write([]byte("hello")); _ = a.(*net.TCPConn).CloseWrite() }()
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "hello" {
			t.Fatalf("read %q, %v", got, err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		a, b := tcpPair(t)
		s := newSockIO(b)
		if s == nil {
			t.Skip("no raw socket I/O on this system")
		}
		_ = a.(*net.TCPConn).SetLinger(0)
		a.Close()
		var err error
		for i := 0; i < 3 && err == nil; i++ {
			_, err = s.Read(make([]byte, 8))
		}
		if err == nil || IsClosedErr(err) {
			t.Fatalf("after a reset: %v, want a connection error", err)
		}
	})
	t.Run("closed while waiting", func(t *testing.T) {
		_, b := tcpPair(t)
		s := newSockIO(b)
		if s == nil {
			t.Skip("no raw socket I/O on this system")
		}
		go func() { time.Sleep(50 * time.Millisecond); b.Close() }()
		if _, err := s.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
		}
		if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write on a closed connection: %v, want net.ErrClosed", err)
		}
	})
	t.Run("write fills the buffer and waits", func(t *testing.T) {
		a, b := tcpPair(t)
		s := newSockIO(b)
		if s == nil {
			t.Skip("no raw socket I/O on this system")
		}
		big := make([]byte, 16<<20) // far beyond the socket buffers
		_, _ = rand.Read(big)
		got := make(chan []byte, 1)
		go func() { r, _ := io.ReadAll(a); got <- r }()
		if n, err := s.Write(big); err != nil || n != len(big) {
			t.Fatalf("wrote %d, %v", n, err)
		}
		_ = b.(*net.TCPConn).CloseWrite()
		if r := <-got; !bytes.Equal(r, big) {
			t.Fatalf("peer got %d bytes, want %d", len(r), len(big))
		}
	})
	t.Run("no allocation per message", func(t *testing.T) {
		a, b := tcpPair(t)
		s := newSockIO(b)
		if s == nil {
			t.Skip("no raw socket I/O on this system")
		}
		msg, buf := []byte("ping"), make([]byte, 64)
		peer := make([]byte, 4)
		allocs := testing.AllocsPerRun(200, func() {
			if _, err := s.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(a, peer); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Write(msg); err != nil {
				t.Fatal(err)
			}
			if n, err := s.Read(buf); err != nil || n != len(msg) {
				t.Fatalf("read %d, %v", n, err)
			}
		})
		// The peer's side goes through the net package, which does not
		// allocate per call either.
		if allocs != 0 {
			t.Fatalf("%.1f allocations per write and read, want 0", allocs)
		}
	})
}

// TestSockIOBlockingSocket: a socket that turns blocking while it is
// relayed (os.File.Fd on a dup clears O_NONBLOCK for the shared file
// description) must not make a raw system call block: that would hold a P
// and stop the garbage collector's stop-the-world, freezing the process.
func TestSockIOBlockingSocket(t *testing.T) {
	// sockIO is the goroutine relay's (the event loop closes the given
	// connections, so File cannot be taken from them).
	old := loopEnabled
	loopEnabled = false
	t.Cleanup(func() { loopEnabled = old })
	app, client := tcpPair(t)
	target, server := tcpPair(t)
	res := make(chan Result, 1)
	go func() { res <- Pipe(client, target) }()
	go func() { _, _ = io.Copy(server, server); _ = server.(*net.TCPConn).CloseWrite() }()
	time.Sleep(50 * time.Millisecond) // both directions are waiting
	for _, c := range []net.Conn{client, target} {
		f, err := c.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		_ = f.Fd() // sets the shared file description to blocking mode
		f.Close()
	}
	_ = app.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	for i := 0; i < 3; i++ {
		if _, err := app.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(app, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo %d: %q, %v", i, buf, err)
		}
	}
	gc := make(chan struct{})
	go func() { runtime.GC(); close(gc) }()
	select {
	case <-gc:
	case <-time.After(5 * time.Second):
		t.Fatal("the garbage collector could not stop the world: a relay read blocks")
	}
	_ = app.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadAll(app); err != nil {
		t.Fatal(err)
	}
	if r := pipeResult(t, res, "both sides ended"); r.Err != nil {
		t.Fatalf("result %+v", r)
	}
}

// pendingConn is a wrapper like the pg connector's server connection: it
// returns buffered bytes first and offers its socket only when none are
// left.
type pendingConn struct {
	net.Conn
	pending []byte
}

func (c *pendingConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *pendingConn) RelayConn() net.Conn {
	if len(c.pending) > 0 {
		return nil
	}
	return c.Conn
}

func (c *pendingConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

var _ Unwrapper = (*pendingConn)(nil)

// TestPipeUnwrapperBuffered: buffered bytes come first, and RelayConn is
// asked before any Read (under -race, asking it while the other direction
// reads is a data race on the wrapper's state).
func TestPipeUnwrapperBuffered(t *testing.T) {
	bothModes(t, func(t *testing.T) {
		for i := 0; i < 100; i++ {
			app, client := tcpPair(t)
			raw, server := tcpPair(t)
			target := &pendingConn{Conn: raw, pending: []byte("buffered-startup-bytes")}
			res := make(chan Result, 1)
			go func() { res <- Pipe(client, target) }()
			go func() {
				_, _ = server.Write([]byte("more"))
				_ = server.(*net.TCPConn).CloseWrite()
			}()
			_ = app.(*net.TCPConn).CloseWrite()
			_ = app.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(app)
			if err != nil || string(got) != "buffered-startup-bytesmore" {
				t.Fatalf("round %d: got %q, %v", i, got, err)
			}
			<-res
		}
	})
}

// enderConn is a target connection whose EOF ends the session; with unwrap
// it hands the relay its socket (raw system calls), as pg's does.
type enderConn struct {
	net.Conn
	unwrap bool
}

func (c *enderConn) EndsSessionAtEOF() bool { return true }
func (c *enderConn) CloseWrite() error      { return c.Conn.(*net.TCPConn).CloseWrite() }
func (c *enderConn) RelayConn() net.Conn {
	if c.unwrap {
		return c.Conn
	}
	return nil
}

// TestPipeSessionEnder: when a SessionEnder target closes, the client gets
// everything it sent and then EOF, and Pipe returns although the client
// keeps its end open; without SessionEnder the client is only half-closed
// and Pipe waits for it.
func TestPipeSessionEnder(t *testing.T) {
	bothModes(t, func(t *testing.T) {
		tests := []struct {
			name     string
			wrap     func(net.Conn) net.Conn
			wantDone bool
		}{
			{"ender, read and write", func(c net.Conn) net.Conn { return &enderConn{Conn: c} }, true},
			{"ender, raw socket", func(c net.Conn) net.Conn { return &enderConn{Conn: c, unwrap: true} }, true},
			{"plain target: half-close only", func(c net.Conn) net.Conn { return c }, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				app, client := tcpPair(t)
				target, server := tcpPair(t)
				done := make(chan Result, 1)
				go func() { done <- Pipe(client, tt.wrap(target)) }()
				_, _ = server.Write([]byte("bye"))
				_ = server.Close()
				_ = app.SetReadDeadline(time.Now().Add(5 * time.Second))
				got, err := io.ReadAll(app)
				if err != nil || string(got) != "bye" {
					t.Fatalf("app read %q, %v; want bye and EOF", got, err)
				}
				select {
				case r := <-done:
					if !tt.wantDone {
						t.Fatalf("Pipe returned (%+v) while the client was still open", r)
					}
					if r.Err != nil || r.TargetToClient != 3 {
						t.Errorf("result %+v", r)
					}
				case <-time.After(2 * time.Second):
					if tt.wantDone {
						t.Fatal("Pipe still running 2 s after the target closed")
					}
					_ = app.Close() // the client's close ends it
					<-done
				}
			})
		}
	})
}
