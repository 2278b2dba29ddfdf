package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/secretless-broker/secretless-broker/internal/metrics"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

func TestMaxConnections(t *testing.T) {
	target := echoServer(t)
	s, logs := startService(t, dialer(target.Addr().String()), nil, func(s *TCPService) {
		s.MaxConnections = 2
		s.Metrics = metrics.New()
	})
	addr := s.Listener.Addr().String()
	var open []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		open = append(open, c)
	}
	over, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err == nil {
		t.Fatal("third connection was served")
	}
	if got := testutil.ToFloat64(s.Metrics.ConnectionsFailed.WithLabelValues("svc", metrics.ReasonLimit)); got != 1 {
		t.Errorf("limit failures = %v", got)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="connection refused" reason=limit service=svc`) {
		t.Errorf("limit not logged:\n%s", logs)
	}
	// Closing one session frees a slot.
	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for s.Active() > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := roundTrip(t, addr, []byte("again")); string(got) != "again" {
		t.Fatalf("after a slot freed: %q", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	target := echoServer(t)
	s, logs := startService(t, dialer(target.Addr().String()), nil, func(s *TCPService) { s.IdleTimeout = 300 * time.Millisecond })
	c, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Activity keeps the session alive past the timeout...
	for i := 0; i < 6; i++ {
		if _, err := c.Write([]byte("k")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("active session closed after %d round trips: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// ...and silence ends it.
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from an idle session")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("idle session closed after %v", d)
	}
	// The log says why the broker ended it.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), `msg="connection closed"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no close logged:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "closedBy=idleTimeout") {
		t.Errorf("close not attributed to the idle timeout:\n%s", logs)
	}
}

func TestMetricsAfterTraffic(t *testing.T) {
	target := echoServer(t)
	s, _ := startService(t, dialer(target.Addr().String()), nil, func(s *TCPService) { s.Metrics = metrics.New() })
	roundTrip(t, s.Listener.Addr().String(), []byte("hello"))
	deadline := time.Now().Add(5 * time.Second)
	for s.Active() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	m := s.Metrics
	if got := testutil.ToFloat64(m.ConnectionsAccepted.WithLabelValues("svc")); got != 1 {
		t.Errorf("accepted = %v", got)
	}
	if got := testutil.ToFloat64(m.BytesRelayed.WithLabelValues("svc", "to_target")); got != 5 {
		t.Errorf("bytes to target = %v", got)
	}
	if got := testutil.ToFloat64(m.BytesRelayed.WithLabelValues("svc", "to_client")); got != 5 {
		t.Errorf("bytes to client = %v", got)
	}
	if got := testutil.ToFloat64(m.ConnectionsActive.WithLabelValues("svc")); got != 0 {
		t.Errorf("active = %v", got)
	}
	if n := testutil.CollectAndCount(m.HandshakeSeconds); n != 1 {
		t.Errorf("handshake series = %d", n)
	}
}

type refusingConnector struct{ tcp.Connector }

func (refusingConnector) Refuse(c net.Conn, reason tcp.RefuseReason) {
	_, _ = c.Write([]byte("refused: " + reason))
}

func TestLimitToldToClient(t *testing.T) {
	target := echoServer(t)
	c := refusingConnector{dialer(target.Addr().String())}
	s, _ := startService(t, c, nil, func(s *TCPService) { s.MaxConnections = 1 })
	first, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := first.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(first, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	second, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_ = second.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(second)
	if string(got) != "refused: too many connections for this service" {
		t.Fatalf("refused client read %q", got)
	}
}

// stuck ignores its client and deadlines, like a badly written plugin.
type stuck struct{ release chan struct{} }

func (s stuck) Connect(net.Conn, connector.CredentialValuesByID) (net.Conn, error) {
	<-s.release
	return nil, errors.New("released")
}

func TestStuckConnectorCannotHoldClientOrShutdown(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &TCPService{Name: "svc", Listener: l, Connector: stuck{release}, HandshakeTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Fetch: func(context.Context) (connector.CredentialValuesByID, error) {
			return connector.CredentialValuesByID{}, nil
		}}
	go func() { _ = s.Serve() }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from a stuck connector")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("client held for %v despite a 300ms connectTimeout", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("shutdown err = %v", err)
		}
	case <-time.After(abandonAfter + 3*time.Second):
		t.Fatal("shutdown never finished with a connector stuck")
	}
}

func TestProviderFailureToldToClient(t *testing.T) {
	target := echoServer(t)
	c := refusingConnector{dialer(target.Addr().String())}
	s, _ := startService(t, c, func(context.Context) (connector.CredentialValuesByID, error) {
		return nil, errors.New("environment variable is not set: X")
	})
	conn, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(conn)
	if string(got) != "refused: "+string(tcp.RefuseCredentialsUnavailable) {
		t.Fatalf("client read %q", got)
	}
}

// session opens a relayed session on addr and checks that it relays.
func session(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("session: %v", err)
	}
	return c
}

// TestLimitWaitsForAClosingSession: a client over the limit that arrives
// while a session is ending is served once it has ended (within
// LimitWait), not refused: clients that come one after another never
// exceed the limit, whatever the time the last one's target takes to close.
func TestLimitWaitsForAClosingSession(t *testing.T) {
	target := echoServer(t)
	s, logs := startService(t, dialer(target.Addr().String()), nil, func(s *TCPService) {
		s.MaxConnections = 1
		s.Metrics = metrics.New()
	})
	addr := s.Listener.Addr().String()
	first := session(t, addr)
	go func() {
		time.Sleep(LimitWait / 4)
		first.Close()
	}()
	if got := roundTrip(t, addr, []byte("next")); string(got) != "next" {
		t.Fatalf("the next client: %q", got)
	}
	if got := testutil.ToFloat64(s.Metrics.ConnectionsFailed.WithLabelValues("svc", metrics.ReasonLimit)); got != 0 {
		t.Errorf("limit failures = %v, want 0:\n%s", got, logs)
	}
}

// TestSlotsSharedAcrossServices: two TCPServices of one service (the old
// one draining after a reload, and the new one) count their sessions
// together against the limit, and the active gauge shows their sum.
func TestSlotsSharedAcrossServices(t *testing.T) {
	target := echoServer(t)
	slots := NewSlots()
	m := metrics.New()
	opts := func(s *TCPService) { s.MaxConnections, s.Slots, s.Metrics = 2, slots, m }
	old, _ := startService(t, dialer(target.Addr().String()), nil, opts)
	cur, _ := startService(t, dialer(target.Addr().String()), nil, opts)
	session(t, old.Listener.Addr().String())
	session(t, cur.Listener.Addr().String())
	if got := testutil.ToFloat64(m.ConnectionsActive.WithLabelValues("svc")); got != 2 {
		t.Errorf("active = %v, want 2", got)
	}
	over, err := net.Dial("tcp", cur.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err == nil {
		t.Fatal("a third session was served with a limit of 2 across both")
	}
	if got := testutil.ToFloat64(m.ConnectionsFailed.WithLabelValues("svc", metrics.ReasonLimit)); got != 1 {
		t.Errorf("limit failures = %v, want 1", got)
	}
}

// TestHandOff: a listener handed from one TCPService to the next keeps the
// clients queued in it, which the next one serves, while the first one's
// open session goes on.
func TestHandOff(t *testing.T) {
	target := echoServer(t)
	marked := func(mark string) tcp.Connector {
		return tcp.ConnectorFunc(func(net.Conn, connector.CredentialValuesByID) (net.Conn, error) {
			c, err := net.Dial("tcp", target.Addr().String())
			if err == nil {
				_, err = c.Write([]byte(mark))
			}
			return c, err
		})
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	fetch := func(context.Context) (connector.CredentialValuesByID, error) {
		return connector.CredentialValuesByID{}, nil
	}
	old := &TCPService{Name: "svc", Listener: l, Connector: marked("A"), Fetch: fetch, Logger: logger}
	served := make(chan error, 1)
	go func() { served <- old.Serve() }()
	open := session(t, addr) // relays "A" first, then the echo
	hl, ok := old.HandOff()
	if !ok {
		t.Fatal("HandOff refused")
	}
	if err := <-served; err != nil {
		t.Fatalf("old Serve: %v", err)
	}
	// Queued in the listener while nobody accepts.
	queued, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	old.StopAccepting() // as the reload does next: leaves the listener open
	ClearDeadline(hl)
	cur := &TCPService{Name: "svc", Listener: hl, Connector: marked("B"), Fetch: fetch, Logger: logger}
	go func() { _ = cur.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = cur.Shutdown(ctx)
		_ = old.Shutdown(ctx)
	})
	_ = queued.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(queued, buf); err != nil || buf[0] != 'B' {
		t.Fatalf("queued client: %q, %v; want it served by the new service", buf, err)
	}
	if _, err := open.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(open, got); err != nil {
		t.Fatalf("the old session after the hand-off: %v", err)
	}
}

// TestWaiterSurvivesHandOff: a client waiting for a slot when its service
// hands its listener to the next version (a reload) keeps waiting, and is
// served when a session ends; a service that stops for good refuses it.
func TestWaiterSurvivesHandOff(t *testing.T) {
	target := echoServer(t)
	for _, handOff := range []bool{true, false} {
		name := "stopped"
		if handOff {
			name = "handed off"
		}
		t.Run(name, func(t *testing.T) {
			s, _ := startService(t, dialer(target.Addr().String()), nil, func(s *TCPService) { s.MaxConnections, s.Slots = 1, NewSlots() })
			addr := s.Listener.Addr().String()
			first := session(t, addr)
			waiter, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer waiter.Close()
			if _, err := waiter.Write([]byte("w")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(LimitWait / 5) // the waiter is accepted and waits
			if handOff {
				l, ok := s.HandOff()
				if !ok {
					t.Fatal("HandOff refused")
				}
				t.Cleanup(func() { l.Close() }) // nobody takes it over here
			}
			s.StopAccepting()
			first.Close()
			_ = waiter.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, 1)
			_, err = io.ReadFull(waiter, got)
			if handOff && (err != nil || got[0] != 'w') {
				t.Fatalf("waiter after the hand-off: %q, %v; want it served", got, err)
			}
			if !handOff && err == nil {
				t.Fatalf("waiter of a stopped service was served (%q)", got)
			}
		})
	}
}
