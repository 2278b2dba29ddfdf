package connectortest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// TCP is a TCP connector loaded the way the broker loads one for a service.
type TCP struct {
	opts      Options
	connector tcp.Connector
	logger    *Logger
}

// LoadTCP loads a TCP connector from the value the plugin's GetTCPPlugin
// returns: it checks opts.Info (when set), calls ValidateConfig (when the
// plugin implements tcp.Validator), ValidateCredentials (when it implements
// connector.CredentialsValidator and opts declares credentials) and
// NewConnector with opts.Config, as the broker does once per service at
// start-up. A non-nil error is what
// would make the broker refuse to start.
func LoadTCP(t testing.TB, p tcp.Plugin, opts Options) (*TCP, error) {
	t.Helper()
	c, logger, err := load(t, p, sdk.TypeTCPConnector, sdk.SymbolGetTCPPlugin, opts,
		func(r connector.Resources) tcp.Connector { return p.NewConnector(r) })
	if err != nil {
		return nil, err
	}
	return &TCP{opts: opts, connector: c, logger: logger}, nil
}

// Connector returns the connector NewConnector built, for tests that call
// its Connect directly.
func (k *TCP) Connector() tcp.Connector { return k.connector }

// Logger returns the logger the connector was given.
func (k *TCP) Logger() *Logger { return k.logger }

// Connect runs one client connection through the connector and waits until
// Connect has returned. It returns the application's end of the client
// connection and Connect's error. On success the kit relays bytes between
// the client connection and the target connection, so whatever the test
// writes to the returned connection reaches the target, authenticated. On
// error the client connection has been closed by the kit, as the broker
// closes it, after whatever the connector wrote to it.
//
// Use Start instead for protocols in which the client speaks first.
func (k *TCP) Connect(t testing.TB, creds Credentials) (net.Conn, error) {
	t.Helper()
	s := k.Start(t, creds)
	return s.Client, s.Wait()
}

// Session is one client connection being handled by the connector.
type Session struct {
	// Client is the application's end of the connection: write what the
	// application sends, read what it receives. It is closed when the
	// test ends.
	Client net.Conn

	done chan struct{}
	err  error
}

// Wait waits for the connector's Connect to return and returns its error
// (or the contract breach that replaced it). It may be called repeatedly.
func (s *Session) Wait() error {
	<-s.done
	return s.err
}

// Start opens a client connection and runs Connect in the background, as
// the broker does for every accepted connection; Session.Client can be used
// at once. The connector receives its own end of a loopback TCP connection
// (a *net.TCPConn, as from the broker's listener) with the handshake
// deadline set, and fresh copies of creds, which are zeroed as soon as
// Connect returns. Everything is closed when the test ends.
func (k *TCP) Start(t testing.TB, creds Credentials) *Session {
	t.Helper()
	brokerSide, tapSide := tcpPair(t)
	client, tapOuter := tcpPair(t)
	s := &Session{Client: client, done: make(chan struct{})}
	tp := &tap{}
	var relayed atomic.Int64 // bytes the relay wrote to brokerSide
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); tp.fromConnector(tapSide, tapOuter) }()
	go func() { defer wg.Done(); tp.toConnector(tapOuter, tapSide) }()

	secrets := creds.secrets(k.opts)
	var target net.Conn
	var targetMu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(s.done)
		values := creds.values()
		logged := k.logger.count()
		deadline := time.Now().Add(k.opts.handshakeTimeout())
		_ = brokerSide.SetDeadline(deadline)
		hs := tcp.WithHandshakeDeadline(brokerSide, deadline)
		var backend net.Conn
		var cerr error
		perr := call("Connect", func() { backend, cerr = k.connector.Connect(hs, values) })
		values.Zero()
		checkLeaks(t, "a log message written during Connect", k.logger.textSince(logged), secrets)
		switch {
		case perr != nil:
			breach(t, "%v; return an error instead", perr)
			checkLeaks(t, "the panic message", []byte(perr.Error()), secrets)
			s.err = perr
		case cerr != nil:
			checkLeaks(t, "the error Connect returned", []byte(cerr.Error()), secrets)
			s.err = cerr
		case backend == nil:
			breach(t, "Connect returned neither a connection nor an error")
			s.err = errors.New("Connect returned neither a connection nor an error")
		case backend == brokerSide || backend == hs:
			breach(t, "Connect returned the client connection as the target connection")
			s.err = errors.New("Connect returned the client connection")
			backend = nil
		default:
			if err := backend.SetDeadline(time.Time{}); err != nil {
				breach(t, "Connect returned an unusable target connection (%v)", err)
				s.err = fmt.Errorf("unusable target connection: %w", err)
			} else if err := brokerSide.SetDeadline(time.Time{}); err != nil {
				breach(t, "Connect succeeded but closed the client connection (%v)", err)
				s.err = fmt.Errorf("client connection closed by Connect: %w", err)
			}
		}
		if s.err != nil {
			if backend != nil {
				_ = backend.Close()
			}
			_ = brokerSide.Close()
			return
		}
		targetMu.Lock()
		target = backend
		targetMu.Unlock()
		wg.Add(1)
		go func() { defer wg.Done(); relay(brokerSide, backend, &relayed) }()
	}()

	t.Cleanup(func() {
		_ = client.Close()
		<-s.done
		targetMu.Lock()
		if target != nil {
			_ = target.Close()
		}
		targetMu.Unlock()
		_ = brokerSide.Close()
		wg.Wait()
		// The bytes that reached the client are what the connector wrote
		// during Connect followed by what the relay copied from the
		// target; only the former are the connector's.
		checkLeaks(t, "what Connect wrote to the client connection", tp.connectorBytes(relayed.Load()), secrets)
	})
	return s
}

// RefuseTimeout is the deadline the broker sets on a client connection it
// refuses (see tcp.Refuser).
const RefuseTimeout = 2 * time.Second

// Refuse does what the broker does when it will not serve a client (for
// example when the service's maxConnections is reached): if the connector
// implements tcp.Refuser, Refuse is called with the client connection
// (deadline RefuseTimeout) and reason, and the connection is closed
// afterwards; otherwise the connection is just closed. It returns the
// application's end, to read what the connector told the client, and
// whether the connector implements tcp.Refuser.
func (k *TCP) Refuse(t testing.TB, reason tcp.RefuseReason) (client net.Conn, implemented bool) {
	t.Helper()
	brokerSide, client := tcpPair(t)
	t.Cleanup(func() { client.Close() })
	r, ok := k.connector.(tcp.Refuser)
	if !ok {
		brokerSide.Close()
		return client, false
	}
	deadline := time.Now().Add(RefuseTimeout)
	_ = brokerSide.SetDeadline(deadline)
	if err := call("Refuse", func() { r.Refuse(tcp.WithHandshakeDeadline(brokerSide, deadline), reason) }); err != nil {
		breach(t, "%v", err)
	}
	brokerSide.Close()
	return client, true
}

// tcpPair returns both ends of a loopback TCP connection: the end accepted
// by a listener first, as the broker's listener accepts the client.
func tcpPair(t testing.TB) (accepted, dialed net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("connectortest: %v", err)
	}
	defer l.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		ch <- result{c, err}
	}()
	dialed, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("connectortest: %v", err)
	}
	r := <-ch
	if r.err != nil {
		dialed.Close()
		t.Fatalf("connectortest: %v", r.err)
	}
	return r.c, dialed
}

// maxRecorded caps how many bytes sent to the client are kept for the leak
// check.
const maxRecorded = 1 << 20

// tap sits between the connector's client connection and the test's, and
// records what goes to the client.
type tap struct {
	mu       sync.Mutex
	recorded []byte
	total    int64
}

// fromConnector copies bytes written by the connector (or the relay) to the
// test's end, recording them. It reads until EOF even when the test's end
// is gone, so that the record is complete.
func (tp *tap) fromConnector(src, dst net.Conn) {
	buf := make([]byte, 32*1024)
	forward := true
	for {
		n, err := src.Read(buf)
		if n > 0 {
			tp.mu.Lock()
			if room := maxRecorded - len(tp.recorded); room > 0 {
				tp.recorded = append(tp.recorded, buf[:min(n, room)]...)
			}
			tp.total += int64(n)
			tp.mu.Unlock()
			if forward {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					forward = false
				}
			}
		}
		if err != nil {
			break
		}
	}
	closeWrite(dst)
	_ = src.Close()
}

func (tp *tap) toConnector(src, dst net.Conn) {
	_, _ = io.Copy(dst, src)
	closeWrite(dst)
	_ = src.Close()
}

// connectorBytes returns the recorded bytes that came before the relay's.
func (tp *tap) connectorBytes(relayed int64) []byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	n := tp.total - relayed
	if n <= 0 {
		return nil
	}
	return tp.recorded[:min(n, int64(len(tp.recorded)))]
}

// relay copies bytes both ways until both directions end, half-closing as
// the broker does, then closes both connections; like the broker, it closes
// both as soon as a tcp.SessionEnder target reaches EOF.
func relay(client, target net.Conn, relayed *atomic.Int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(countingWriter{client, relayed}, target)
		closeWrite(client)
		if e, ok := target.(tcp.SessionEnder); ok && e.EndsSessionAtEOF() {
			_ = client.Close()
			_ = target.Close()
		}
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(target, client)
		closeWrite(target)
	}()
	wg.Wait()
	_ = client.Close()
	_ = target.Close()
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// isNil reports a nil interface or one holding a nil pointer, map, slice,
// func or chan, as the broker checks a plugin's Get*Plugin result.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return rv.IsNil()
	}
	return false
}
