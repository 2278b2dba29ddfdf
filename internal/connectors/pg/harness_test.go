package pg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/secretless-broker/secretless-broker/internal/relay"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
	"github.com/secretless-broker/secretless-broker/sdk/log"
)

// service emulates the broker for one pg service: it listens on TCP and on
// a unix socket (".s.PGSQL.<port>" in sockDir), calls Connect for every
// accepted connection with fresh credentials (zeroed afterwards, like the
// broker), and relays with relay.Pipe.
type service struct {
	t       testing.TB
	conn    *pgConnector
	log     *testLogger
	port    int
	sockDir string

	mu    sync.Mutex
	creds map[string]string
	// brokerTimeout, when set, plays the broker's part: the connection
	// Connect gets carries a tcp.HandshakeDeadline that far away, and the
	// client is closed then.
	brokerTimeout time.Duration
	errs          []error
	relayErrs     []error // relays that ended with an error, as the broker logs them
	sessions      []sessionInfo
	open          map[net.Conn]bool
	wg            sync.WaitGroup
	lns           []net.Listener
}

func newService(t testing.TB, creds map[string]string, cfg string) *service {
	t.Helper()
	s := &service{t: t, log: &testLogger{}, creds: creds, open: map[net.Conn]bool{}}
	s.conn = newConnector([]byte(cfg), s.log)
	s.conn.sessionHook = func(si sessionInfo) {
		s.mu.Lock()
		s.sessions = append(s.sessions, si)
		s.mu.Unlock()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.port = ln.Addr().(*net.TCPAddr).Port
	s.sockDir, err = os.MkdirTemp("", "pgsvc-")
	if err != nil {
		t.Fatal(err)
	}
	uln, err := net.Listen("unix", filepath.Join(s.sockDir, fmt.Sprintf(".s.PGSQL.%d", s.port)))
	if err != nil {
		t.Fatal(err)
	}
	s.lns = []net.Listener{ln, uln}
	for _, l := range s.lns {
		s.wg.Add(1)
		go s.serve(l)
	}
	t.Cleanup(s.close)
	return s
}

func (s *service) serve(l net.Listener) {
	defer s.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.open[c] = true
		creds := connector.CredentialValuesByID{}
		for k, v := range s.creds {
			creds[k] = []byte(v)
		}
		bt := s.brokerTimeout
		s.mu.Unlock()
		// As the broker does: Connect gets the connection with its
		// handshake deadline, which brokerTimeout enforces when set.
		d := time.Now().Add(30 * time.Second)
		if bt > 0 {
			d = time.Now().Add(bt)
			_ = c.SetDeadline(d)
			timer := time.AfterFunc(bt, func() { _ = c.Close() })
			defer timer.Stop()
		}
		cc := tcp.WithHandshakeDeadline(c, d)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { s.mu.Lock(); delete(s.open, c); s.mu.Unlock() }()
			target, err := s.conn.Connect(cc, creds)
			creds.Zero()
			if err != nil {
				s.mu.Lock()
				s.errs = append(s.errs, err)
				s.mu.Unlock()
				s.log.Errorf("connect: %v", err)
				_ = c.Close()
				return
			}
			if res := relay.Pipe(c, target); !relay.IsClosedErr(res.Err) {
				s.mu.Lock()
				s.relayErrs = append(s.relayErrs, res.Err)
				s.mu.Unlock()
			}
		}()
	}
}

// connectErr connects with pgx (extra added to the DSN), which must fail,
// and returns the error; the start-up must not take more than 10 s.
func (s *service) connectErr(t testing.TB, extra string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.dsn(extra))
	if err == nil {
		c.Close(ctx)
		t.Fatalf("connected (DSN extra %q); want a refusal", extra)
	}
	return err
}

// waitError returns the last error Connect returned, waiting up to d for
// one (nil if none came).
func (s *service) waitError(d time.Duration) error {
	deadline := time.Now().Add(d)
	for s.lastError() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return s.lastError()
}

// openCount is how many client connections the service is serving.
func (s *service) openCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// waitClosed fails the test unless the service serves no connection within
// d: every relay has ended and freed its client connection.
func (s *service) waitClosed(t testing.TB, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for s.openCount() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d client connections still served %s later", s.openCount(), d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// setCred changes (or with value "" removes) one credential for the
// following connections.
func (s *service) setCred(k, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == "" {
		delete(s.creds, k)
		return
	}
	s.creds[k] = v
}

func (s *service) lastSession() sessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) == 0 {
		s.t.Fatal("no session recorded")
	}
	return s.sessions[len(s.sessions)-1]
}

func (s *service) lastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) == 0 {
		return nil
	}
	return s.errs[len(s.errs)-1]
}

func (s *service) close() {
	for _, l := range s.lns {
		_ = l.Close()
	}
	s.mu.Lock()
	for c := range s.open {
		_ = c.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("service: connections still open 10s after the test")
	}
	_ = os.RemoveAll(s.sockDir)
	if s.conn.pool != nil {
		s.conn.pool.closeAll()
	}
	// No password may appear in the log (debug level) or in returned errors.
	var texts []string
	texts = append(texts, s.log.lines()...)
	s.mu.Lock()
	for _, e := range s.errs {
		texts = append(texts, e.Error())
	}
	s.mu.Unlock()
	for _, txt := range texts {
		for _, r := range allRoles {
			shown := txt
			if strings.Contains(r.name, r.password) {
				shown = strings.ReplaceAll(shown, r.name, "") // a user named like its password
			}
			if r.password != "" && strings.Contains(shown, r.password) {
				s.t.Errorf("password of %s appears in broker output: %q", r.name, txt)
			}
		}
	}
}

// dsn is a libpq/pgx connection string to the service over TCP.
func (s *service) dsn(extra string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=anyone dbname=%s sslmode=disable connect_timeout=5 %s", s.port, testDB, extra)
}

func (s *service) connect(t testing.TB, extra string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.dsn(extra))
	if err != nil {
		t.Fatalf("connect through the broker: %v (broker: %v)", err, s.lastError())
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// baseCreds returns credentials for a role on the test server.
func baseCreds(srv *pgServer, r role, sslmode string) map[string]string {
	m := map[string]string{
		"host":     "127.0.0.1",
		"port":     fmt.Sprint(srv.port),
		"username": r.name,
		"sslmode":  sslmode,
	}
	if r.password != "" {
		m["password"] = r.password
	}
	return m
}

func queryString(t testing.TB, c *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// testLogger records every message, debug included.
type testLogger struct {
	mu  sync.Mutex
	buf []string
}

func (l *testLogger) add(level, s string) {
	l.mu.Lock()
	l.buf = append(l.buf, level+" "+s)
	l.mu.Unlock()
}

func (l *testLogger) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.buf...)
}

func (l *testLogger) Debugf(f string, a ...any) { l.add("DEBUG", fmt.Sprintf(f, a...)) }
func (l *testLogger) Infof(f string, a ...any)  { l.add("INFO", fmt.Sprintf(f, a...)) }
func (l *testLogger) Warnf(f string, a ...any)  { l.add("WARN", fmt.Sprintf(f, a...)) }
func (l *testLogger) Errorf(f string, a ...any) { l.add("ERROR", fmt.Sprintf(f, a...)) }
func (l *testLogger) Panicf(f string, a ...any) {
	l.add("PANIC", fmt.Sprintf(f, a...))
	panic(fmt.Sprintf(f, a...))
}
func (l *testLogger) Debug(a ...any)   { l.add("DEBUG", fmt.Sprint(a...)) }
func (l *testLogger) Info(a ...any)    { l.add("INFO", fmt.Sprint(a...)) }
func (l *testLogger) Warn(a ...any)    { l.add("WARN", fmt.Sprint(a...)) }
func (l *testLogger) Error(a ...any)   { l.add("ERROR", fmt.Sprint(a...)) }
func (l *testLogger) Panic(a ...any)   { l.add("PANIC", fmt.Sprint(a...)); panic(fmt.Sprint(a...)) }
func (l *testLogger) Debugln(a ...any) { l.add("DEBUG", fmt.Sprintln(a...)) }
func (l *testLogger) Infoln(a ...any)  { l.add("INFO", fmt.Sprintln(a...)) }
func (l *testLogger) Warnln(a ...any)  { l.add("WARN", fmt.Sprintln(a...)) }
func (l *testLogger) Errorln(a ...any) { l.add("ERROR", fmt.Sprintln(a...)) }
func (l *testLogger) Panicln(a ...any) {
	l.add("PANIC", fmt.Sprintln(a...))
	panic(fmt.Sprintln(a...))
}
func (l *testLogger) DebugEnabled() bool               { return true }
func (l *testLogger) Prefix() string                   { return "pg-test" }
func (l *testLogger) CopyWith(string, bool) log.Logger { return l }

var _ log.Logger = (*testLogger)(nil)

// pgErrCode returns the SQLSTATE of a pgx error, or "".
func pgErrCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
