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
	if !strings.Contains(logs.String(), "maxConnections reached") {
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
