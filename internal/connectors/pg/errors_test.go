package pg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestErrors checks every failure: the client gets one FATAL ErrorResponse
// with the right SQLSTATE within about a second, its text never holds the
// password, and Connect returns an error of the right kind (the harness
// also checks that no returned error and no log line holds a password).
func TestErrors(t *testing.T) {
	srv := needServer(t)
	closedPort := refusingPort(t)
	fake := func(h func(net.Conn)) string { return fmt.Sprint(fakeServer(t, h)) }
	// afterStartup runs a fake server that reads the startup and then h.
	afterStartup := func(h func(c net.Conn)) string {
		return fake(func(c net.Conn) {
			if _, err := fakeReadStartup(c); err != nil {
				return
			}
			h(c)
		})
	}
	// saslThen starts SCRAM and hands over the client's final message.
	saslThen := func(mechs []string, h func(c net.Conn, clientNonce string)) string {
		return afterStartup(func(c net.Conn) {
			_ = writeMsgs(c, &pgproto3.AuthenticationSASL{AuthMechanisms: mechs})
			typ, body, err := readFrontendMsg(c)
			if err != nil || typ != 'p' {
				return
			}
			var ir pgproto3.SASLInitialResponse
			if ir.Decode(body) != nil {
				return
			}
			_, nonce, _ := strings.Cut(string(ir.Data), ",r=")
			h(c, nonce)
		})
	}
	scramContinue := func(c net.Conn, nonce string) bool {
		_ = writeMsgs(c, &pgproto3.AuthenticationSASLContinue{
			Data: []byte("r=" + nonce + "SERVER,s=c2FsdHNhbHQ=,i=4096")})
		typ, _, err := readFrontendMsg(c)
		return err == nil && typ == 'p'
	}

	tests := []struct {
		name     string
		role     role
		creds    map[string]string // merged over the role's credentials
		config   string
		dsn      string
		wantCode string
		wantText string
		wantKind error
		// brokerTimeout: the broker's connectTimeout (tcp.HandshakeDeadline)
		brokerTimeout time.Duration
	}{
		{name: "wrong password", creds: map[string]string{"password": "definitely-Wrong-9"},
			wantCode: codeInvalidPassword, wantText: "password authentication failed", wantKind: ErrServerRejected},
		{name: "wrong password says whose", creds: map[string]string{"password": "definitely-Wrong-9"},
			wantCode: codeInvalidPassword, wantText: "refused the login the broker made with this service's credentials", wantKind: ErrServerRejected},
		{name: "md5 stored role under scram hba", role: roleMD5inSCRAM,
			wantCode: codeInvalidPassword, wantText: "password authentication failed", wantKind: ErrServerRejected},
		{name: "no password credential, scram", creds: map[string]string{"password": ""},
			wantCode: codeInvalidPassword, wantText: "asks for a password (SCRAM-SHA-256) and the service has no password credential", wantKind: ErrConfig},
		{name: "no password credential, md5", role: roleMD5, creds: map[string]string{"password": ""},
			wantCode: codeInvalidPassword, wantText: "asks for a password (md5) and the service has no password credential", wantKind: ErrConfig},
		{name: "no password credential, cleartext", role: rolePassword, creds: map[string]string{"password": ""},
			wantCode: codeInvalidPassword, wantText: "asks for a password (password) and the service has no password credential", wantKind: ErrConfig},
		{name: "unknown database", dsn: "dbname=no_such_db",
			wantCode: codeInvalidCatalogName, wantText: `database "no_such_db" does not exist`, wantKind: ErrServerRejected},
		{name: "too many connections", role: roleLimited,
			wantCode: codeTooManyConnections, wantText: "too many connections", wantKind: ErrServerRejected},
		{name: "target unreachable", creds: map[string]string{"port": fmt.Sprint(closedPort)},
			wantCode: codeUnableToConnect, wantText: "could not connect", wantKind: ErrTargetUnreachable},
		{name: "unknown target host", creds: map[string]string{"host": "no-such-host.invalid"},
			wantCode: codeUnableToConnect, wantText: "could not connect", wantKind: ErrTargetUnreachable},
		{name: "missing host credential", creds: map[string]string{"host": ""},
			wantCode: codeUnableToConnect, wantText: "credentials", wantKind: ErrConfig},
		{name: "bad sslmode credential", creds: map[string]string{"sslmode": "sometimes"},
			wantCode: codeUnableToConnect, wantText: "credentials", wantKind: ErrConfig},
		{name: "invalid config block", config: "tls:\n  cert: /nonexistent\n  key: /nonexistent\n",
			wantCode: codeUnableToConnect, wantText: "configuration", wantKind: ErrConfig},
		{name: "server closes during startup", creds: map[string]string{"port": afterStartup(func(net.Conn) {})},
			wantCode: codeConnectionFailure, wantText: "closed the connection", wantKind: ErrTargetUnreachable},
		{name: "server never answers", config: "handshakeTimeout: 500ms",
			creds:    map[string]string{"port": afterStartup(drain)},
			wantCode: codeConnectionFailure, wantText: "did not answer in time", wantKind: ErrTargetUnreachable},
		{name: "server never answers, broker deadline first", brokerTimeout: 800 * time.Millisecond,
			creds:    map[string]string{"port": afterStartup(drain)},
			wantCode: codeConnectionFailure, wantText: "did not answer in time", wantKind: ErrTargetUnreachable},
		{name: "server never answers, broker deadline first, tls server", brokerTimeout: 800 * time.Millisecond,
			creds: map[string]string{"sslmode": "prefer", "port": fake(func(c net.Conn) {
				if p, err := readStartupPacket(c, nil); err != nil || p.kind != kindSSLRequest {
					return
				}
				drain(c) // never answers the SSLRequest
			})},
			wantCode: codeConnectionFailure, wantText: "did not answer in time", wantKind: ErrTargetUnreachable},
		{name: "gssapi requested", creds: map[string]string{"port": afterStartup(func(c net.Conn) {
			_ = writeMsgs(c, &pgproto3.AuthenticationGSS{})
			drain(c)
		})}, wantCode: codeInvalidAuthSpec, wantText: "GSSAPI", wantKind: ErrUnsupportedAuth},
		{name: "sspi requested", creds: map[string]string{"port": afterStartup(func(c net.Conn) {
			_, _ = c.Write([]byte{'R', 0, 0, 0, 8, 0, 0, 0, 9})
			drain(c)
		})}, wantCode: codeInvalidAuthSpec, wantText: "SSPI", wantKind: ErrUnsupportedAuth},
		{name: "unknown sasl mechanism", creds: map[string]string{"port": afterStartup(func(c net.Conn) {
			_ = writeMsgs(c, &pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-1", "OAUTHBEARER"}})
			drain(c)
		})}, wantCode: codeInvalidAuthSpec, wantText: "SASL mechanism", wantKind: ErrUnsupportedAuth},
		{name: "forged scram server signature", creds: map[string]string{"port": saslThen([]string{mechSCRAM}, func(c net.Conn, nonce string) {
			if scramContinue(c, nonce) {
				_ = writeMsgs(c, &pgproto3.AuthenticationSASLFinal{Data: []byte("v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")},
					&pgproto3.AuthenticationOk{})
				drain(c)
			}
		})}, wantCode: codeInvalidAuthSpec, wantText: "failed to prove", wantKind: ErrServerAuth},
		{name: "authentication ok without scram final", creds: map[string]string{"port": saslThen([]string{mechSCRAM}, func(c net.Conn, nonce string) {
			if scramContinue(c, nonce) {
				_ = writeMsgs(c, &pgproto3.AuthenticationOk{})
				drain(c)
			}
		})}, wantCode: codeInvalidAuthSpec, wantText: "did not complete SCRAM", wantKind: ErrServerAuth},
		{name: "scram nonce not extended", creds: map[string]string{"port": saslThen([]string{mechSCRAM}, func(c net.Conn, nonce string) {
			_ = writeMsgs(c, &pgproto3.AuthenticationSASLContinue{Data: []byte("r=other,s=c2FsdA==,i=4096")})
			drain(c)
		})}, wantCode: codeInvalidAuthSpec, wantText: "invalid SCRAM exchange", wantKind: ErrServerAuth},
		{name: "scram iteration count out of range", creds: map[string]string{"port": saslThen([]string{mechSCRAM}, func(c net.Conn, nonce string) {
			_ = writeMsgs(c, &pgproto3.AuthenticationSASLContinue{Data: []byte("r=" + nonce + "x,s=c2FsdA==,i=2000000000")})
			drain(c)
		})}, wantCode: codeInvalidAuthSpec, wantText: "invalid SCRAM exchange", wantKind: ErrServerAuth},
		{name: "oversized server message", creds: map[string]string{"port": afterStartup(func(c net.Conn) {
			_, _ = c.Write([]byte{'R', 0x7f, 0, 0, 0})
			drain(c)
		})}, wantCode: codeConnectionFailure, wantText: "broke the protocol", wantKind: ErrTargetProtocol},
		{name: "unexpected message before authentication", creds: map[string]string{"port": afterStartup(func(c net.Conn) {
			_ = writeMsgs(c, &pgproto3.ReadyForQuery{TxStatus: 'I'})
			drain(c)
		})}, wantCode: codeConnectionFailure, wantText: "broke the protocol", wantKind: ErrTargetProtocol},
		{name: "bytes injected after S", creds: map[string]string{"sslmode": "require", "port": fake(func(c net.Conn) {
			if p, err := readStartupPacket(c, nil); err != nil || p.kind != kindSSLRequest {
				return
			}
			_, _ = c.Write([]byte("SR\x00\x00\x00\x08\x00\x00\x00\x00"))
			drain(c)
		})}, wantCode: codeConnectionFailure, wantText: "unencrypted data after SSL response", wantKind: ErrTargetProtocol},
		{name: "invalid answer to ssl request", creds: map[string]string{"sslmode": "require", "port": fake(func(c net.Conn) {
			if _, err := readStartupPacket(c, nil); err != nil {
				return
			}
			_, _ = c.Write([]byte("X"))
			drain(c)
		})}, wantCode: codeConnectionFailure, wantText: "invalid response to SSL negotiation", wantKind: ErrTargetProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tc.role
			if r.name == "" {
				r = roleSCRAM
			}
			creds := baseCreds(srv, r, "disable")
			for k, v := range tc.creds {
				creds[k] = v
				if v == "" {
					delete(creds, k)
				}
			}
			svc := newService(t, creds, tc.config)
			svc.mu.Lock()
			svc.brokerTimeout = tc.brokerTimeout
			svc.mu.Unlock()
			start := time.Now()
			err := svc.connectErr(t, tc.dsn)
			if d := time.Since(start); d > 1500*time.Millisecond {
				t.Errorf("the error took %s to reach the client", d)
			}
			checkPgError(t, err, tc.wantCode, tc.wantText, r.password)
			if got := svc.waitError(2 * time.Second); !errors.Is(got, tc.wantKind) {
				t.Errorf("Connect returned %v, want kind %v", got, tc.wantKind)
			}
		})
	}
}

// refusingPort returns a loopback port that refuses connections for the
// whole test: a socket is bound to it but never listens, so no other test's
// listener can take the port over (as a freed port can be).
func refusingPort(t *testing.T) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}

// TestStartupNoticeWithPassword: a notice the server sends during the
// startup reaches the client, unless it quotes the password.
func TestStartupNoticeWithPassword(t *testing.T) {
	const password = "pw-Notice-Secret-7"
	port := fakeServer(t, func(c net.Conn) {
		if _, err := fakeReadStartup(c); err != nil {
			return
		}
		if writeMsgs(c, &pgproto3.AuthenticationCleartextPassword{}) != nil {
			return
		}
		if typ, _, err := readFrontendMsg(c); err != nil || typ != 'p' {
			return
		}
		_ = writeMsgs(c,
			&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "welcome"},
			&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "your password is " + password},
			&pgproto3.AuthenticationOk{},
			&pgproto3.ParameterStatus{Name: "application_name", Value: "x" + password},
			&pgproto3.ParameterStatus{Name: "TimeZone", Value: "UTC"},
			&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 2}},
			&pgproto3.ReadyForQuery{TxStatus: 'I'})
		drain(c)
	})
	svc := newService(t, map[string]string{"host": "127.0.0.1", "port": fmt.Sprint(port), "username": "u",
		"password": password, "sslmode": "disable"}, "")
	cfg, err := pgx.ParseConfig(svc.dsn(""))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var notices []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		notices = append(notices, n.Message)
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(ctx)
	mu.Lock()
	defer mu.Unlock()
	if len(notices) != 1 || notices[0] != "welcome" {
		t.Errorf("client got notices %q, want only the one without the password", notices)
	}
	ps := c.PgConn().ParameterStatus
	if got := ps("application_name"); got != "" {
		t.Errorf("client got application_name %q, a setting holding the password", got)
	}
	if got := ps("TimeZone"); got != "UTC" {
		t.Errorf("client got TimeZone %q, want UTC", got)
	}
}

// TestPasswordInUserName: with the password inside the user name (user and
// password both "devuser", as in many development setups), the server's
// errors naming the role reach the client and the log as they are; only a
// password shown outside the name is hidden.
func TestPasswordInUserName(t *testing.T) {
	srv := needServer(t)
	tests := []struct {
		name     string
		role     role
		password string // the service's password credential, when not the role's
		wantCode string
		wantText string
	}{
		{"too many connections for the role", roleNamedPW, "",
			codeTooManyConnections, `too many connections for role "devuser"`},
		{"wrong password equal to the user name", roleSCRAM, roleSCRAM.name,
			codeInvalidPassword, `password authentication failed for user "scram_user"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			creds := baseCreds(srv, tc.role, "disable")
			if tc.password != "" {
				creds["password"] = tc.password
			}
			svc := newService(t, creds, "")
			err := svc.connectErr(t, "")
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != tc.wantCode || !strings.Contains(pe.Message, tc.wantText) {
				t.Fatalf("client got %v, want %s %q", err, tc.wantCode, tc.wantText)
			}
			got := fmt.Sprint(svc.waitError(2 * time.Second))
			if !strings.Contains(got, tc.wantText) || !strings.Contains(got, tc.wantCode) {
				t.Errorf("logged error %q, want the server's %s %q", got, tc.wantCode, tc.wantText)
			}
		})
	}
}

// TestShowsSecret: a password counts as shown only outside the public names.
func TestShowsSecret(t *testing.T) {
	tests := []struct {
		name, text, secret string
		public             []string
		want               bool
	}{
		{"absent", "password authentication failed", "s3cret-pw", nil, false},
		{"present", "bad s3cret-pw", "s3cret-pw", nil, true},
		{"only inside the user name", `for role "devuser"`, "devuser", []string{"devuser"}, false},
		{"inside a longer user name", `for role "devuser_admin"`, "devuser", []string{"devuser_admin"}, false},
		{"beside the user name", `for role "devuser": devuser`, "devuser", []string{"devuser_admin"}, true},
		{"name does not hold it", "x s3cret-pw", "s3cret-pw", []string{"app"}, true},
		{"removing the name does not join its sides", "dev" + "devuser_x" + "user", "devuser", []string{"devuser_x"}, false},
		{"the other name holds it", `role "app" database "orders"`, "orders", []string{"app", "orders"}, false},
		{"too short to look for", "pw1", "pw1", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var pub [][]byte
			for _, p := range tc.public {
				pub = append(pub, []byte(p))
			}
			if got := showsSecret([]byte(tc.text), []byte(tc.secret), pub...); got != tc.want {
				t.Errorf("showsSecret(%q, %q, %q) = %v, want %v", tc.text, tc.secret, tc.public, got, tc.want)
			}
		})
	}
}

// TestRevealsPassword: a setting the server sends is held back when it
// shows the password, but not for holding a user or database name the
// password is part of (user and password both "postgres").
func TestRevealsPassword(t *testing.T) {
	tests := []struct {
		name, user, db, password, value string
		want                            bool
	}{
		{"holds it", "app", "", "s3cret-pw", "a s3cret-pw b", true},
		{"does not", "app", "", "s3cret-pw", "UTC", false},
		{"user named like the password", "postgres", "", "postgres", "postgres", false},
		{"database named like the password", "app", "orders-db", "orders", "orders-db", false},
		{"password beside the user name", "postgres", "", "postgres", "postgres and postgres", false},
		{"user contains it, value holds it alone", "postgres-admin", "", "postgres", "x postgres", true},
		{"too short to look for", "app", "", "pw1", "pw1", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := &target{username: tc.user, database: tc.db, password: []byte(tc.password)}
			if got := tg.revealsPassword(tc.value); got != tc.want {
				t.Errorf("revealsPassword(%q) = %v, want %v", tc.value, got, tc.want)
			}
		})
	}
}

// TestPasswordWithLineBreakHint: a refused password that ends with a line
// break (a file written with echo) is pointed out in the broker's log.
func TestPasswordWithLineBreakHint(t *testing.T) {
	srv := needServer(t)
	creds := baseCreds(srv, roleSCRAM, "disable")
	creds["password"] = roleSCRAM.password + "\n"
	svc := newService(t, creds, "")
	_ = svc.connectErr(t, "")
	for _, l := range svc.log.lines() {
		if strings.HasPrefix(l, "WARN ") && strings.Contains(l, "ends with a line break") {
			return
		}
	}
	t.Errorf("no hint about the line break in the log:\n%s", strings.Join(svc.log.lines(), "\n"))
}
