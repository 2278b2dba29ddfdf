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
	"runtime/debug"
	"sync"
	"time"

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
	Logger    *slog.Logger
	// HandshakeTimeout bounds credential fetch plus Connect; 0 means the default.
	HandshakeTimeout time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
	closed bool
}

// Serve accepts connections until the listener is closed. It returns nil
// after Shutdown and the accept error otherwise.
func (s *TCPService) Serve() error {
	var tempDelay time.Duration
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
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
		if !s.track(c, true) {
			_ = c.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			s.handle(c)
		}()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

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
	log := s.Logger.With("service", s.Name, "client", client.RemoteAddr().String())
	start := time.Now()
	setKeepAlive(client)
	target, err := s.authenticate(client)
	if err != nil {
		log.Warn("connection refused", "error", err)
		_ = client.Close()
		return
	}
	setKeepAlive(target)
	log.Debug("connection authenticated", "target", target.RemoteAddr().String(), "handshake", time.Since(start))
	res := relay.Pipe(client, target)
	if !relay.IsClosedErr(res.Err) {
		log.Debug("connection ended with error", "error", res.Err, "sent", res.ClientToTarget, "received", res.TargetToClient)
		return
	}
	log.Debug("connection closed", "sent", res.ClientToTarget, "received", res.TargetToClient, "duration", time.Since(start))
}

// authenticate fetches credentials and runs the connector, recovering a
// panic into an error. Credentials are zeroed before it returns.
func (s *TCPService) authenticate(client net.Conn) (target net.Conn, err error) {
	timeout := s.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	creds, err := s.Fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch credentials: %w", err)
	}
	defer creds.Zero()
	_ = client.SetDeadline(time.Now().Add(timeout))
	defer func() {
		if r := recover(); r != nil {
			// The panic value is logged by type and message only: connectors
			// are told not to put secrets in panics, and the stack is debug.
			s.Logger.Debug("connector panic stack", "service", s.Name, "stack", string(debug.Stack()))
			target, err = nil, Redact(fmt.Errorf("connector panicked: %v", r), creds)
		}
	}()
	target, err = s.Connector.Connect(client, creds)
	if err != nil {
		if target != nil {
			_ = target.Close()
		}
		return nil, fmt.Errorf("connector: %w", Redact(err, creds))
	}
	if target == nil {
		return nil, errors.New("connector returned no target connection")
	}
	_ = client.SetDeadline(time.Time{})
	_ = target.SetDeadline(time.Time{})
	return target, nil
}

// Shutdown stops accepting, then waits for active connections to finish
// until ctx is done, when it closes the rest. It returns ctx.Err() if it had
// to force connections closed.
func (s *TCPService) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	_ = s.Listener.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}
