package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/config"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// echoServer is the target: it echoes until EOF, then closes its write side.
func echoServer(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return l
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func startService(t *testing.T, c tcp.Connector, fetch FetchFunc, opts ...func(*TCPService)) (*TCPService, *syncBuf) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	if fetch == nil {
		fetch = func(context.Context) (connector.CredentialValuesByID, error) {
			return connector.CredentialValuesByID{"password": []byte("hunter2-secret")}, nil
		}
	}
	s := &TCPService{Name: "svc", Listener: l, Connector: c, Fetch: fetch,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, o := range opts {
		o(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, logs
}

func dialer(target string) tcp.Connector {
	return tcp.ConnectorFunc(func(net.Conn, connector.CredentialValuesByID) (net.Conn, error) {
		return net.Dial("tcp", target)
	})
}

func roundTrip(t *testing.T, addr string, msg []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	// Half-close: the echo server sees EOF only if the broker passes it on.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return got
}

func TestRelayHalfCloseAndBulk(t *testing.T) {
	target := echoServer(t)
	s, _ := startService(t, dialer(target.Addr().String()), nil)
	tests := []struct {
		name string
		size int
	}{{"empty", 0}, {"small", 17}, {"larger than buffer", 3*32*1024 + 5}, {"8 MiB", 8 << 20}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := bytes.Repeat([]byte("0123456789abcdef"), tt.size/16+1)[:tt.size]
			got := roundTrip(t, s.Listener.Addr().String(), msg)
			if !bytes.Equal(got, msg) {
				t.Fatalf("got %d bytes back, want %d", len(got), len(msg))
			}
		})
	}
}

func TestFailuresCloseOnlyThatConnection(t *testing.T) {
	target := echoServer(t)
	const secret = "hunter2-secret"
	tests := []struct {
		name    string
		c       tcp.Connector
		fetch   FetchFunc
		wantLog string
	}{
		{"connector panics with the secret", tcp.ConnectorFunc(func(_ net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
			panic("boom " + string(c["password"]))
		}), nil, "connector panicked: boom [REDACTED]"},
		{"connector error quoting the secret", tcp.ConnectorFunc(func(_ net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
			return nil, errors.New("auth failed for " + string(c["password"]))
		}), nil, "auth failed for [REDACTED]"},
		{"connector returns nil conn", tcp.ConnectorFunc(func(net.Conn, connector.CredentialValuesByID) (net.Conn, error) {
			return nil, nil
		}), nil, "connector returned no target connection"},
		{"connector returns the client's connection", tcp.ConnectorFunc(func(c net.Conn, _ connector.CredentialValuesByID) (net.Conn, error) {
			return c, nil
		}), nil, "connector returned the client's own connection as the target"},
		{"connector returns the client's socket unwrapped", tcp.ConnectorFunc(func(c net.Conn, _ connector.CredentialValuesByID) (net.Conn, error) {
			return c.(interface{ NetConn() net.Conn }).NetConn(), nil
		}), nil, "connector returned the client's own connection as the target"},
		{"connector returns its own wrapper of the client", tcp.ConnectorFunc(func(c net.Conn, _ connector.CredentialValuesByID) (net.Conn, error) {
			return struct{ net.Conn }{c}, nil
		}), nil, "connector returned the client's own connection as the target"},
		{"target down", tcp.ConnectorFunc(func(net.Conn, connector.CredentialValuesByID) (net.Conn, error) {
			return net.Dial("tcp", "127.0.0.1:1")
		}), nil, "dial tcp 127.0.0.1:1: connect: connection refused"},
		{"provider error", dialer(target.Addr().String()), func(context.Context) (connector.CredentialValuesByID, error) {
			return nil, errors.New("environment variable is not set: X")
		}, "fetch credentials: environment variable is not set: X"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, logs := startService(t, tt.c, tt.fetch)
			for i := 0; i < 3; i++ { // the service keeps serving after each failure
				c, err := net.Dial("tcp", s.Listener.Addr().String())
				if err != nil {
					t.Fatalf("dial %d: %v", i, err)
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 {
					t.Fatalf("connection %d stayed open (n=%d, err=%v)", i, n, err)
				}
				c.Close()
			}
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(logs.String(), tt.wantLog) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, logs)
			}
			if strings.Contains(logs.String(), secret) {
				t.Errorf("secret in log:\n%s", logs)
			}
		})
	}
}

func TestCredentialsZeroedAfterConnect(t *testing.T) {
	target := echoServer(t)
	var mu sync.Mutex
	var seen []byte
	c := tcp.ConnectorFunc(func(_ net.Conn, cr connector.CredentialValuesByID) (net.Conn, error) {
		mu.Lock()
		seen = cr["password"] // keep the slice (which connectors must not do) to look at it later
		mu.Unlock()
		return net.Dial("tcp", target.Addr().String())
	})
	s, _ := startService(t, c, nil)
	if got := roundTrip(t, s.Listener.Addr().String(), []byte("x")); string(got) != "x" {
		t.Fatalf("echo = %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || !bytes.Equal(seen, make([]byte, len(seen))) {
		t.Fatalf("credential not zeroed after Connect: %q", seen)
	}
}

func TestNoLeakAfterManyConnections(t *testing.T) {
	target := echoServer(t)
	s, _ := startService(t, dialer(target.Addr().String()), nil)
	addr := s.Listener.Addr().String()
	roundTrip(t, addr, []byte("warm up"))
	settle := func() int {
		for i := 0; i < 100; i++ {
			runtime.GC()
			if s.Active() == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	base := settle()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapInuse

	const total, parallel = 3000, 16
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for i := 0; i < total; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			switch i % 3 {
			case 0: // clean half-close
				_, _ = c.Write([]byte("ping"))
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.ReadAll(c)
			case 1: // client vanishes mid-session
				_, _ = c.Write([]byte("ping"))
			case 2: // abortive close (RST)
				_ = c.(*net.TCPConn).SetLinger(0)
			}
		}(i)
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for s.Active() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := s.Active(); n != 0 {
		t.Fatalf("%d connections still tracked", n)
	}
	after := settle()
	if after > base+5 {
		buf := make([]byte, 1<<16)
		t.Fatalf("goroutines: %d before, %d after %d connections\n%s", base, after, total, buf[:runtime.Stack(buf, true)])
	}
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > baseHeap+16<<20 {
		t.Errorf("heap in use grew from %d to %d bytes", baseHeap, ms.HeapInuse)
	}
}

func TestShutdownWaitsForActiveConnection(t *testing.T) {
	target := echoServer(t)
	s, _ := startService(t, dialer(target.Addr().String()), nil)
	c, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	select {
	case err := <-done:
		t.Fatalf("shutdown returned while a session was open: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// The open session still works during the drain.
	if _, err := c.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("session broken during drain: %v", err)
	}
	// New connections are refused.
	if nc, err := net.DialTimeout("tcp", s.Listener.Addr().String(), time.Second); err == nil {
		nc.Close()
		t.Error("listener still accepting during shutdown")
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_, _ = io.ReadAll(c)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not finish after the session ended")
	}
}

func TestShutdownGraceExpires(t *testing.T) {
	target := echoServer(t)
	s, logs := startService(t, dialer(target.Addr().String()), nil)
	c, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("a"))
	_, _ = io.ReadFull(c, make([]byte, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after grace period")
	}
	// The cut is logged as such, not as an ordinary close.
	for _, want := range []string{`level=WARN msg="closing sessions still open at the end of the shutdown grace period" service=svc sessions=1`,
		`level=WARN msg="connection closed"`, "closedBy=shutdownTimeout"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// TestShutdownWithNothingOpen: with no open connection, Shutdown is done
// even when its grace period has already run out.
func TestShutdownWithNothingOpen(t *testing.T) {
	target := echoServer(t)
	s, _ := startService(t, dialer(target.Addr().String()), nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v, want nil", err)
	}
}

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	addr := func(name string) config.Address {
		p := filepath.Join(dir, name)
		return config.Address{Network: "unix", Address: p, Raw: "unix://" + p}
	}
	t.Run("default mode", func(t *testing.T) {
		l, err := Listen(addr("a.sock"), config.DefaultSocketMode)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		st, err := os.Stat(filepath.Join(dir, "a.sock"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o660 {
			t.Fatalf("mode = %o, want 660", st.Mode().Perm())
		}
	})
	t.Run("regular file is never replaced", func(t *testing.T) {
		p := filepath.Join(dir, "data")
		if err := os.WriteFile(p, []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Listen(addr("data"), 0o600)
		if !errors.Is(err, ErrNotSocket) {
			t.Fatalf("err = %v", err)
		}
		if b, _ := os.ReadFile(p); string(b) != "precious" {
			t.Fatal("file was changed")
		}
	})
	t.Run("missing directory is named", func(t *testing.T) {
		_, err := Listen(addr("nodir/x.sock"), 0o600)
		if err == nil || !strings.Contains(err.Error(), "directory "+filepath.Join(dir, "nodir")+" does not exist") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("directory is never replaced", func(t *testing.T) {
		if err := os.Mkdir(filepath.Join(dir, "d"), 0o700); err != nil {
			t.Fatal(err)
		}
		_, err := Listen(addr("d"), 0o600)
		if !errors.Is(err, ErrNotSocket) || !strings.Contains(err.Error(), "is a directory: listenOn names the socket file itself, such as "+filepath.Join(dir, "d", ".s.PGSQL.5432")) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("stale socket is replaced", func(t *testing.T) {
		a := addr("stale.sock")
		l, err := net.Listen("unix", a.Address)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		l2, err := Listen(a, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		l2.Close()
	})
	t.Run("live socket is not stolen", func(t *testing.T) {
		a := addr("live.sock")
		l, err := net.Listen("unix", a.Address)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if _, err := Listen(a, 0o600); err == nil || !strings.Contains(err.Error(), "another process") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("tcp address in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, err = Listen(config.Address{Network: "tcp", Address: l.Addr().String(), Raw: "tcp://" + l.Addr().String()}, 0)
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestUnixSocketRemovedOnlyIfStillOurs(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		replace  func(t *testing.T, path string)
		wantGone bool
	}{
		{"our socket is removed", func(*testing.T, string) {}, true},
		{"a file that replaced it stays", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"another socket that replaced it stays", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			other, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			other.(*net.UnixListener).SetUnlinkOnClose(false)
			other.Close()
		}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, fmt.Sprintf("s%d.sock", i))
			l, err := Listen(config.Address{Network: "unix", Address: p, Raw: "unix://" + p}, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			tt.replace(t, p)
			l.Close()
			_, err = os.Lstat(p)
			if gone := errors.Is(err, os.ErrNotExist); gone != tt.wantGone {
				t.Fatalf("after Close, gone = %v, want %v", gone, tt.wantGone)
			}
		})
	}
}

// TestHandshakeDeadline: Connect learns when the broker will close its
// client (the service's HandshakeTimeout), so that a connector can tell the
// client why it failed before that.
func TestHandshakeDeadline(t *testing.T) {
	target := echoServer(t)
	const timeout = 3 * time.Second
	got := make(chan time.Duration, 1)
	c := tcp.ConnectorFunc(func(client net.Conn, _ connector.CredentialValuesByID) (net.Conn, error) {
		d, ok := tcp.HandshakeDeadline(client)
		if !ok {
			got <- -1
		} else {
			got <- time.Until(d)
		}
		return net.Dial("tcp", target.Addr().String())
	})
	s, _ := startService(t, c, nil, func(s *TCPService) { s.HandshakeTimeout = timeout })
	if echo := roundTrip(t, s.Listener.Addr().String(), []byte("x")); string(echo) != "x" {
		t.Fatalf("echo = %q", echo)
	}
	left := <-got
	if left < 0 {
		t.Fatal("the client connection carries no handshake deadline")
	}
	if left > timeout || left < timeout-time.Second {
		t.Fatalf("handshake deadline %v away, want just under %v", left, timeout)
	}
}
