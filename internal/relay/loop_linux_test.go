//go:build linux

package relay

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// unixPair returns both ends of a unix stream connection (never spliced,
// so a bulk stream stays in the event loop).
func unixPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	return connPair(t, "unix", filepath.Join(t.TempDir(), "s"))
}

func processCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// openSockets counts the process's socket descriptors. Other kinds are
// left out: Go's splice keeps a pool of pipes, and the loops' epoll and
// eventfd descriptors stay for the life of the process.
func openSockets(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// TestLoopTakesOver: a pair of plain sockets is relayed by the event loop,
// which owns the sockets from then on (the given connections are closed),
// and a bulk stream between TCP sockets goes back to goroutines, where it
// splices.
func TestLoopTakesOver(t *testing.T) {
	tests := []struct {
		name      string
		pair      func(*testing.T) (net.Conn, net.Conn)
		size      int
		wantMoved bool
	}{
		{"tcp, small", tcpPair, 1000, false},
		{"tcp, bulk moves to goroutines", tcpPair, 16 << 20, true},
		{"unix, bulk stays in the loop", unixPair, 16 << 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, client := tt.pair(t)
			target, server := tt.pair(t)
			data := make([]byte, tt.size)
			_, _ = rand.Read(data)
			moves := loopMoves.Load()
			res := make(chan Result, 1)
			go func() { res <- Pipe(client, target) }()
			go func() {
				_, _ = server.Write(data)
				_ = server.(interface{ CloseWrite() error }).CloseWrite()
			}()
			_ = app.SetDeadline(time.Now().Add(20 * time.Second))
			got, err := io.ReadAll(app)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("app got %d bytes (%v), want the %d sent", len(got), err, len(data))
			}
			// The loop closed the given connection: its own descriptor is
			// gone, the socket is not.
			if _, err := client.Write([]byte("x")); err == nil {
				t.Error("the given client connection still works: the loop did not take it over")
			}
			_ = app.(interface{ CloseWrite() error }).CloseWrite()
			if _, err := io.ReadAll(server); err != nil {
				t.Fatal(err)
			}
			r := <-res
			if r.Err != nil || r.TargetToClient != int64(tt.size) || r.ClientToTarget != 0 {
				t.Fatalf("result %+v", r)
			}
			if moved := loopMoves.Load() > moves; moved != tt.wantMoved {
				t.Errorf("moved to goroutines: %v, want %v", moved, tt.wantMoved)
			}
		})
	}
}

// TestLoopBackPressure: a client that reads slowly makes the loop hold the
// unwritten rest and stop reading the target until it drains; everything
// arrives in order, in both directions at once.
func TestLoopBackPressure(t *testing.T) {
	app, client := unixPair(t)
	target, server := unixPair(t)
	res := make(chan Result, 1)
	go func() { res <- Pipe(client, target) }()
	down := make([]byte, 8<<20)
	up := make([]byte, 8<<20)
	_, _ = rand.Read(down)
	_, _ = rand.Read(up)
	var wg sync.WaitGroup
	wg.Add(2)
	var serverGot []byte
	go func() {
		defer wg.Done()
		_, _ = server.Write(down)
		_ = server.(*net.UnixConn).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		serverGot, _ = io.ReadAll(server)
	}()
	go func() {
		_, _ = app.Write(up)
		_ = app.(*net.UnixConn).CloseWrite()
	}()
	var appGot bytes.Buffer
	buf := make([]byte, 4096)
	_ = app.SetDeadline(time.Now().Add(30 * time.Second))
	for i := 0; ; i++ {
		n, err := app.Read(buf)
		appGot.Write(buf[:n])
		if err != nil {
			break
		}
		if i%64 == 0 {
			time.Sleep(time.Millisecond) // slow reader
		}
	}
	wg.Wait()
	if !bytes.Equal(appGot.Bytes(), down) || !bytes.Equal(serverGot, up) {
		t.Fatalf("app got %d of %d bytes intact: %v; server %d of %d: %v", appGot.Len(), len(down),
			bytes.Equal(appGot.Bytes(), down), len(serverGot), len(up), bytes.Equal(serverGot, up))
	}
	if r := <-res; r.Err != nil || r.TargetToClient != int64(len(down)) || r.ClientToTarget != int64(len(up)) {
		t.Fatalf("result %+v", r)
	}
}

// TestLoopManySessions: sessions of every kind at once in the loop, each
// echoing its own data, and no descriptor left behind.
func TestLoopManySessions(t *testing.T) {
	before := openSockets(t)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		pair := tcpPair
		if i%2 == 1 {
			pair = unixPair
		}
		app, client := pair(t)
		target, server := pair(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			go func() { _, _ = io.Copy(server, server); _ = server.(interface{ CloseWrite() error }).CloseWrite() }()
			res := make(chan Result, 1)
			go func() { res <- Pipe(client, target) }()
			data := make([]byte, 1+i*5000)
			_, _ = rand.Read(data)
			go func() {
				for off := 0; off < len(data); off += 700 {
					_, _ = app.Write(data[off:min(off+700, len(data))])
				}
				_ = app.(interface{ CloseWrite() error }).CloseWrite()
			}()
			_ = app.SetDeadline(time.Now().Add(20 * time.Second))
			got, err := io.ReadAll(app)
			if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
				errs <- fmt.Errorf("session %d: %d of %d bytes back (%v)", i, len(got), len(data), err)
				return
			}
			if r := <-res; r.Err != nil {
				errs <- fmt.Errorf("session %d: %v", i, r.Err)
			}
			app.Close()
			server.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The test's own sockets are closed by now; the loop's duplicates and
	// the sockets of sessions moved to goroutines must be too.
	deadline := time.Now().Add(2 * time.Second)
	for openSockets(t) > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := openSockets(t); got > before {
		t.Errorf("%d sockets open after the sessions, %d before", got, before)
	}
}

// TestLoopCloseWhileMoved: Close ends a session the loop has handed back
// to goroutines.
func TestLoopCloseWhileMoved(t *testing.T) {
	app, client := tcpPair(t)
	target, server := tcpPair(t)
	res := make(chan Result, 1)
	moves := loopMoves.Load()
	go func() { res <- Pipe(client, target) }()
	// A bulk stream that the app reads until the session has moved and
	// then stops reading: both goroutines end up blocked.
	go func() { _, _ = server.Write(make([]byte, 256<<20)) }()
	_ = app.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64<<10)
	for loopMoves.Load() == moves {
		if _, err := app.Read(buf); err != nil {
			t.Fatalf("the bulk session did not move to goroutines: %v", err)
		}
	}
	_ = Close(client)
	wantClosed(t, res)
}

// TestLoopResetAfterHalfClose: a client that half-closes and then resets
// while the target is silent leaves the loop idle (its socket out of the
// epoll set, not reported over and over), and the target's next answer
// ends the session with an error.
func TestLoopResetAfterHalfClose(t *testing.T) {
	app, client := tcpPair(t)
	target, server := tcpPair(t)
	res := make(chan Result, 1)
	go func() { res <- Pipe(client, target) }()
	_ = app.(*net.TCPConn).CloseWrite()
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(server); err != nil {
		t.Fatal(err) // the half-close reached the server
	}
	_ = app.(*net.TCPConn).SetLinger(0)
	app.Close()
	time.Sleep(50 * time.Millisecond) // the reset has arrived
	cpu0 := processCPU(t)
	time.Sleep(300 * time.Millisecond)
	if used := processCPU(t) - cpu0; used > 50*time.Millisecond {
		t.Errorf("the process used %v of CPU in 300 ms while nothing was relayed: the loop spins", used)
	}
	for i := 0; i < 20; i++ {
		if _, err := server.Write([]byte("late answer")); err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
		select {
		case r := <-res:
			if IsClosedErr(r.Err) {
				t.Errorf("error %v, want the reset", r.Err)
			}
			return
		default:
		}
	}
	pipeResult(t, res, "writing to a reset client")
}

// TestCloseWhileStarting: a Close that races with the start of Pipe (as a
// shutdown's does with a session that is just entering the relay) always
// ends the session, whichever step of taking the sockets over it falls
// on. The loop once lost a Close that came between its taking over the
// client's socket and the session becoming findable.
func TestCloseWhileStarting(t *testing.T) {
	bothModes(t, func(t *testing.T) {
		const iters = 1000
		for i := range iters {
			app, client := tcpPair(t)
			target, server := tcpPair(t)
			res := make(chan Result, 1)
			go func() { res <- Pipe(client, target) }()
			for range i % 150 { // a different step of the start each time
				runtime.Gosched()
			}
			_ = Close(client)
			select {
			case <-res:
			case <-time.After(2 * time.Second):
				_ = server.Close()
				_ = app.Close()
				<-res
				t.Fatalf("iteration %d: Pipe still running 2 s after Close", i)
			}
			_ = app.Close()
			_ = server.Close()
		}
	})
}
