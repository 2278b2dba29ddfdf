// Package proxy runs TCP services: one listener per service; for each
// accepted connection it fetches credentials, lets the connector authenticate
// to the target, zeroes the credentials and relays bytes until either side
// ends. A failure in one connection closes that connection only.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/metrics"
	"github.com/secretless-broker/secretless-broker/internal/redact"
	"github.com/secretless-broker/secretless-broker/internal/relay"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// Defaults for a TCP service.
const (
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultKeepAlive        = 30 * time.Second
)

// FetchFunc returns fresh credentials for one connection.
type FetchFunc func(ctx context.Context) (connector.CredentialValuesByID, error)

// TCPService serves one service's listener.
type TCPService struct {
	Name      string
	Listener  net.Listener
	Connector tcp.Connector
	Fetch     FetchFunc
	// Live, when set, holds each connection's secrets during its
	// handshake, so that the connector's log lines are redacted with them.
	Live   *redact.Live
	Logger *slog.Logger
	// HandshakeTimeout bounds credential fetch plus Connect (which includes
	// dialing the target); 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxConnections caps concurrent client connections; 0 means no cap.
	// A connection over the cap waits up to LimitWait for a session to
	// end, then is refused (logged and counted).
	MaxConnections int
	// Slots counts the sessions against MaxConnections; nil means a count
	// of this TCPService's own. The broker gives each service one Slots
	// that its TCPServices share across reloads.
	Slots *Slots
	// IdleTimeout closes a relayed session after this long with no bytes in
	// either direction; 0 means never.
	IdleTimeout time.Duration
	// Metrics may be nil.
	Metrics *metrics.Metrics

	refusing semaphore

	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
	closed    bool
	handedOff bool          // the listener went to the next service: not closed here
	stop      chan struct{} // closed when accepting stops
	cut       atomic.Bool   // Shutdown's deadline passed: it closed the open sessions
}

// stopped is closed when the service stops accepting.
func (s *TCPService) stopped() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop == nil {
		s.stop = make(chan struct{})
	}
	return s.stop
}

func (s *TCPService) slots() *Slots {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Slots == nil {
		s.Slots = NewSlots()
	}
	return s.Slots
}

// Serve accepts connections until the listener is closed. It returns nil
// after Shutdown and the accept error otherwise.
func (s *TCPService) Serve() error {
	var tempDelay time.Duration
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed || s.handedOff
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// e.g. EMFILE: back off instead of spinning or exiting.
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				s.Logger.Warn("accept failed; retrying", "service", s.Name, "error", err, "delay", tempDelay)
				time.Sleep(tempDelay)
				continue
			}
			return fmt.Errorf("service %s: accept: %w", s.Name, err)
		}
		tempDelay = 0
		if s.Metrics != nil {
			s.Metrics.ConnectionsAccepted.WithLabelValues(s.Name).Inc()
		}
		if !s.track(c, true) {
			_ = c.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			slots := s.slots()
			if !slots.acquire(s.MaxConnections, LimitWait, s.stopped(), s.setActive) {
				s.fail(metrics.ReasonLimit)
				s.Logger.Warn("connection refused", "reason", metrics.ReasonLimit, "service", s.Name, "conn", connIDs.Add(1),
					"client", c.RemoteAddr().String(), "maxConnections", s.MaxConnections)
				s.refuse(c, tcp.RefuseTooManyConnections)
				return
			}
			defer slots.release(s.setActive)
			s.handle(c)
		}()
	}
}

func (s *TCPService) setActive(n int) {
	if s.Metrics != nil {
		s.Metrics.ConnectionsActive.WithLabelValues(s.Name).Set(float64(n))
	}
}

// RefuseTimeout bounds how long a refused client is given to hear why.
const RefuseTimeout = 2 * time.Second

// refuse closes c, first letting a connector that implements tcp.Refuser
// tell the client why, bounded by RefuseTimeout and by the number of
// refusals in flight (so a flood cannot pile up work).
func (s *TCPService) refuse(c net.Conn, reason tcp.RefuseReason) {
	defer c.Close()
	r, ok := s.Connector.(tcp.Refuser)
	if !ok || !s.refusing.TryAcquire() {
		return
	}
	defer s.refusing.Release()
	defer func() { _ = recover() }()
	deadline := time.Now().Add(RefuseTimeout)
	_ = c.SetDeadline(deadline)
	r.Refuse(tcp.WithHandshakeDeadline(c, deadline), reason)
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// track adds or removes an open connection (one being served, or waiting
// for a slot), which Shutdown closes at its deadline. Adding reports false
// once the service is shut down.
func (s *TCPService) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		if s.conns == nil {
			s.conns = map[net.Conn]struct{}{}
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

func (s *TCPService) fail(reason string) {
	if s.Metrics != nil {
		s.Metrics.ConnectionsFailed.WithLabelValues(s.Name, reason).Inc()
	}
}

var connIDs atomic.Uint64

// Active returns the number of open client connections.
func (s *TCPService) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func setKeepAlive(c net.Conn) {
	type keepAliver interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	}
	if ka, ok := c.(keepAliver); ok {
		_ = ka.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: DefaultKeepAlive, Interval: DefaultKeepAlive / 2, Count: 3})
	}
}

func (s *TCPService) handle(client net.Conn) {
	// Closed on every path, including a connector that calls runtime.Goexit.
	defer client.Close()
	log := s.Logger.With("service", s.Name, "conn", connIDs.Add(1), "client", client.RemoteAddr().String())
	start := time.Now()
	setKeepAlive(client)
	target, reason, err := s.authenticate(client)
	if err != nil {
		s.fail(reason)
		log.Warn("connection refused", "reason", reason, "error", err, "duration", time.Since(start))
		if reason == metrics.ReasonCredentials {
			s.refuse(client, tcp.RefuseCredentialsUnavailable)
		}
		return
	}
	if s.Metrics != nil {
		metrics.ObserveSince(s.Metrics.HandshakeSeconds.WithLabelValues(s.Name), start)
	}
	setKeepAlive(target)
	log.Debug("connection authenticated", "target", target.RemoteAddr().String(), "handshake", time.Since(start))
	c, t := client, target
	var idle *idleTimer
	if s.IdleTimeout > 0 {
		idle = newIdleTimer(s.IdleTimeout, client, target)
		defer idle.stop()
		c, t = idle.wrap(client), idle.wrap(target)
	}
	res := relay.Pipe(c, t)
	if s.Metrics != nil {
		s.Metrics.BytesRelayed.WithLabelValues(s.Name, "to_target").Add(float64(res.ClientToTarget))
		s.Metrics.BytesRelayed.WithLabelValues(s.Name, "to_client").Add(float64(res.TargetToClient))
	}
	attrs := []any{"duration", time.Since(start), "bytesToTarget", res.ClientToTarget, "bytesToClient", res.TargetToClient}
	switch {
	case idle != nil && idle.fired.Load():
		// Bytes were on neither leg for idleTimeout: the broker ended the
		// session (both sides see a plain close; see docs/operations.md).
		attrs = append(attrs, "closedBy", "idleTimeout")
	case s.cut.Load():
		// Still open when a shutdown or a reload's drain ran out of time.
		log.Warn("connection closed", append(attrs, "closedBy", "shutdownTimeout")...)
		return
	case !relay.IsClosedErr(res.Err):
		attrs = append(attrs, "error", res.Err)
	}
	log.Info("connection closed", attrs...)
}

// authenticate fetches credentials and runs the connector, recovering a
// panic into an error. Credentials are zeroed before it returns. On failure
// reason is one of the metrics.Reason* words.
func (s *TCPService) authenticate(client net.Conn) (target net.Conn, reason string, err error) {
	timeout := s.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	creds, err := s.Fetch(ctx)
	if err != nil {
		return nil, metrics.ReasonCredentials, fmt.Errorf("fetch credentials: %w", err)
	}
	defer creds.Zero()
	defer s.Live.Add(creds)() // removed before the values are zeroed
	_ = client.SetDeadline(deadline)
	// A connector that ignores deadlines (or blocks elsewhere) still loses
	// its client at the deadline; whatever it returns later is discarded.
	timer := time.AfterFunc(time.Until(deadline), func() { _ = client.Close() })
	defer timer.Stop() // also on the panic path
	defer func() {
		if r := recover(); r != nil {
			// The stack goes to the debug log only; the message is redacted.
			s.Logger.Debug("connector panic stack", "service", s.Name, "stack", string(debug.Stack()))
			target, reason, err = nil, metrics.ReasonPanic, Redact(fmt.Errorf("connector panicked: %v", r), creds)
		}
	}()
	wrapped := tcp.WithHandshakeDeadline(client, deadline)
	target, err = s.Connector.Connect(wrapped, creds)
	if !timer.Stop() {
		if target != nil {
			_ = target.Close()
		}
		return nil, metrics.ReasonTimeout, fmt.Errorf("connector did not finish within connectTimeout (%v)", timeout)
	}
	if err != nil {
		if target != nil {
			_ = target.Close()
		}
		reason = metrics.ReasonConnector
		// A connector that honours tcp.HandshakeDeadline gives up a little
		// before it, on an I/O deadline of its own.
		if time.Now().After(deadline) || errors.Is(err, os.ErrDeadlineExceeded) {
			reason = metrics.ReasonTimeout
		}
		return nil, reason, fmt.Errorf("connector: %w", Redact(err, creds))
	}
	if target == nil {
		return nil, metrics.ReasonConnector, errors.New("connector returned no target connection")
	}
	if sameConn(target, client, wrapped) {
		// Relayed, it would echo the client to itself.
		return nil, metrics.ReasonConnector, errors.New("connector returned the client's own connection as the target")
	}
	_ = client.SetDeadline(time.Time{})
	_ = target.SetDeadline(time.Time{})
	return target, "", nil
}

// sameConn reports whether target is the client's connection: one of the
// given values, or a wrapper of the same TCP socket (the same two
// addresses).
func sameConn(target net.Conn, client ...net.Conn) bool {
	for _, c := range client {
		if target == c {
			return true
		}
	}
	tl, tr := target.LocalAddr(), target.RemoteAddr()
	cl, cr := client[0].LocalAddr(), client[0].RemoteAddr()
	if tl == nil || tr == nil || cl == nil || cr == nil || tl.Network() != "tcp" {
		return false
	}
	return tl.Network() == cl.Network() && tl.String() == cl.String() && tr.String() == cr.String()
}

// abandonAfter is how long Shutdown waits, after its deadline and closing
// every connection, for goroutines stuck in a connector.
const abandonAfter = 2 * time.Second

// StopAccepting closes the listener (unless it was handed off); open
// connections continue. Clients waiting for a slot are refused, unless
// the listener was handed off: then the service goes on under a new
// config, and they keep waiting for a slot of the count both share.
func (s *TCPService) StopAccepting() {
	stop := s.stopped()
	s.mu.Lock()
	if !s.closed && !s.handedOff {
		close(stop)
	}
	s.closed = true
	handedOff := s.handedOff
	s.mu.Unlock()
	if !handedOff {
		_ = s.Listener.Close()
	}
}

// HandOff stops accepting without closing the listener, for the service
// that replaces this one on the very same address (a reload): clients
// queued in the listener are then accepted by the new service instead of
// being reset. It wakes Serve with a deadline in the past; a connection
// accepted before that is served here as usual. The caller waits for Serve
// to return, clears the deadline (ClearDeadline) and serves the listener
// anew; StopAccepting and Shutdown then leave it open.
func (s *TCPService) HandOff() (net.Listener, bool) {
	d, ok := s.Listener.(interface{ SetDeadline(time.Time) error })
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	if s.closed || s.handedOff {
		s.mu.Unlock()
		return nil, false
	}
	s.handedOff = true
	s.mu.Unlock()
	_ = d.SetDeadline(time.Unix(1, 0))
	return s.Listener, true
}

// ClearDeadline undoes HandOff's deadline on a listener taken over.
func ClearDeadline(l net.Listener) {
	if d, ok := l.(interface{ SetDeadline(time.Time) error }); ok {
		_ = d.SetDeadline(time.Time{})
	}
}

// Shutdown stops accepting, then waits for active connections to finish
// until ctx is done, when it closes the rest. It returns ctx.Err() if it had
// to force connections closed.
func (s *TCPService) Shutdown(ctx context.Context) error {
	s.StopAccepting()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	// Nothing open: done at once, however short the grace period.
	if s.Active() == 0 {
		<-done
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.cut.Store(true)
		s.mu.Lock()
		s.Logger.Warn("closing sessions still open at the end of the shutdown grace period", "service", s.Name, "sessions", len(s.conns))
		for c := range s.conns {
			_ = relay.Close(c) // also ends an event-loop relay holding it
		}
		s.mu.Unlock()
		// Closing the sockets ends every relay. A connector stuck in code
		// that ignores its connection gets a moment more, then is abandoned
		// so that shutdown always finishes.
		select {
		case <-done:
		case <-time.After(abandonAfter):
			s.Logger.Warn("abandoning connections stuck in their connector", "service", s.Name, "connections", s.Active())
		}
		return ctx.Err()
	}
}

// semaphore is a small counting semaphore (zero value: 64 slots).
type semaphore struct{ n atomic.Int32 }

const maxRefusing = 64

func (s *semaphore) TryAcquire() bool {
	if s.n.Add(1) > maxRefusing {
		s.n.Add(-1)
		return false
	}
	return true
}

func (s *semaphore) Release() { s.n.Add(-1) }
