package pg

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// TestSSLModeMatrix checks libpq's sslmode semantics on the server leg,
// against a TLS-enabled server and against a server without TLS.
func TestSSLModeMatrix(t *testing.T) {
	srv := needServer(t)
	noTLSPort := noSSLProxy(t, srv.port)
	ca, other := string(srv.pki.caPEM), string(srv.pki.otherCAPEM)
	tests := []struct {
		name    string
		role    role
		noTLS   bool // target the server without TLS
		sslmode string
		creds   map[string]string
		wantTLS bool
		// on failure:
		wantCode string
		wantText string // in message or detail
	}{
		{name: "disable", sslmode: "disable"},
		{name: "allow", sslmode: "allow"},
		{name: "prefer", sslmode: "prefer", wantTLS: true},
		{name: "require", sslmode: "require", wantTLS: true},
		{name: "default is require", sslmode: "", wantTLS: true},
		{name: "require with root cert verifies the chain", sslmode: "require", creds: map[string]string{"sslrootcert": ca}, wantTLS: true},
		{name: "require with wrong root cert fails", sslmode: "require", creds: map[string]string{"sslrootcert": other},
			wantCode: codeUnableToConnect, wantText: "unknown authority"},
		{name: "verify-ca ignores the host name", sslmode: "verify-ca", creds: map[string]string{"sslrootcert": srv.pki.caFile}, wantTLS: true},
		{name: "verify-ca wrong root cert", sslmode: "verify-ca", creds: map[string]string{"sslrootcert": other},
			wantCode: codeUnableToConnect, wantText: "unknown authority"},
		{name: "verify-ca system roots", sslmode: "verify-ca", wantCode: codeUnableToConnect, wantText: "unknown authority"},
		{name: "verify-full", sslmode: "verify-full", creds: map[string]string{"host": "localhost", "sslrootcert": ca}, wantTLS: true},
		{name: "verify-full wrong host fails clearly", sslmode: "verify-full", creds: map[string]string{"sslrootcert": ca},
			wantCode: codeUnableToConnect, wantText: "(its Common Name; it has no IP addresses) and for localhost, not 127.0.0.1"},
		{name: "verify-full sslhost overrides the name", sslmode: "verify-full",
			creds: map[string]string{"sslrootcert": srv.pki.caFile, "sslhost": "localhost"}, wantTLS: true},
		{name: "verify-full wrong sslhost", sslmode: "verify-full",
			creds:    map[string]string{"host": "localhost", "sslrootcert": ca, "sslhost": "db.wrong.example"},
			wantCode: codeUnableToConnect, wantText: "not db.wrong.example"},
		{name: "allow falls back to tls for hostssl-only role", role: roleSSLOnly, sslmode: "allow", wantTLS: true},
		{name: "prefer falls back to plaintext for hostnossl-only role", role: roleNoSSLOnly, sslmode: "prefer"},
		{name: "require with hostnossl-only role", role: roleNoSSLOnly, sslmode: "require",
			wantCode: codeInvalidAuthSpec, wantText: "pg_hba.conf rejects connection"},
		{name: "disable with hostssl-only role", role: roleSSLOnly, sslmode: "disable",
			wantCode: codeInvalidAuthSpec, wantText: "pg_hba.conf rejects connection"},
		{name: "no tls server: disable", noTLS: true, sslmode: "disable"},
		{name: "no tls server: allow", noTLS: true, sslmode: "allow"},
		{name: "no tls server: prefer", noTLS: true, sslmode: "prefer"},
		{name: "no tls server: require", noTLS: true, sslmode: "require",
			wantCode: codeUnableToConnect, wantText: "does not support SSL"},
		{name: "no tls server: default require says what to change", noTLS: true, sslmode: "",
			wantCode: codeUnableToConnect, wantText: "set the service's credential sslmode to prefer or disable"},
		{name: "no tls server: allow reports the server's refusal", noTLS: true, role: roleSSLOnly, sslmode: "allow",
			wantCode: codeInvalidAuthSpec, wantText: "pg_hba.conf rejects connection"},
		{name: "no tls server: verify-full", noTLS: true, sslmode: "verify-full", creds: map[string]string{"sslrootcert": ca},
			wantCode: codeUnableToConnect, wantText: "the service's credential sslmode is verify-full; enable ssl on the server"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tc.role
			if r.name == "" {
				r = roleSCRAM
			}
			creds := baseCreds(srv, r, tc.sslmode)
			if tc.sslmode == "" {
				delete(creds, "sslmode")
			}
			if tc.noTLS {
				creds["port"] = fmt.Sprint(noTLSPort)
			}
			for k, v := range tc.creds {
				creds[k] = v
			}
			svc := newService(t, creds, "")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			c, err := pgx.Connect(ctx, svc.dsn(""))
			if tc.wantCode != "" {
				if err == nil {
					c.Close(ctx)
					t.Fatalf("connected, want SQLSTATE %s", tc.wantCode)
				}
				checkPgError(t, err, tc.wantCode, tc.wantText, r.password)
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("error took %s", d)
				}
				return
			}
			if err != nil {
				t.Fatalf("connect: %v (broker: %v)", err, svc.lastError())
			}
			defer c.Close(ctx)
			got := queryString(t, c, "select ssl::text from pg_stat_ssl where pid = pg_backend_pid()")
			if want := fmt.Sprint(tc.wantTLS); got != want {
				t.Errorf("server leg ssl = %s, want %s", got, want)
			}
		})
	}
}

// issueCert makes a server certificate from the test CA with the given
// Common Name and subject alternative names.
func issueCert(t *testing.T, p *testPKI, cn string, dns []string, ips []net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dns,
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestVerifyFullNames checks verify-full's name check against certificates
// named in the ways libpq accepts or refuses, among them a certificate with
// only a Common Name (the kind PostgreSQL's documentation shows how to
// make), which crypto/tls alone refuses. Each certificate is presented by a
// TLS proxy in front of the real server.
func TestVerifyFullNames(t *testing.T) {
	srv := needServer(t)
	loopback := []net.IP{net.ParseIP("127.0.0.1")}
	tests := []struct {
		name          string
		cn            string
		dns           []string
		ips           []net.IP
		host, sslhost string
		wantText      string // "" means it connects
	}{
		{name: "common name only", cn: "localhost", host: "localhost"},
		{name: "common name in another case", cn: "LocalHost", host: "localhost"},
		{name: "common name wildcard", cn: "*.pg.test", host: "localhost", sslhost: "db.pg.test"},
		{name: "common name wildcard covers one label only", cn: "*.pg.test", host: "localhost", sslhost: "a.db.pg.test",
			wantText: `certificate is for "*.pg.test" (its Common Name; it has no DNS names), not a.db.pg.test`},
		{name: "common name wildcard does not cover the domain", cn: "*.pg.test", host: "localhost", sslhost: "pg.test",
			wantText: `certificate is for "*.pg.test"`},
		{name: "wrong common name", cn: "db.other.test", host: "localhost", wantText: `certificate is for "db.other.test"`},
		{name: "dns names override the common name", cn: "localhost", dns: []string{"db.other.test"}, host: "localhost",
			wantText: "valid for db.other.test, not localhost"},
		{name: "dns name", cn: "ignored.test", dns: []string{"localhost"}, host: "localhost"},
		{name: "ip address", ips: loopback, host: "127.0.0.1"},
		{name: "common name holding the ip address", cn: "127.0.0.1", host: "127.0.0.1"},
		{name: "ip host, neither names it", cn: "localhost", host: "127.0.0.1",
			wantText: `certificate is for "localhost" (its Common Name; it has no IP addresses), not 127.0.0.1`},
		{name: "ip host, ip addresses override the common name", cn: "127.0.0.1", ips: []net.IP{net.ParseIP("10.9.9.9")},
			host: "127.0.0.1", wantText: "valid for 10.9.9.9, not 127.0.0.1"},
		{name: "ip host, dns names do not hide the common name", cn: "127.0.0.1", dns: []string{"foo.example"}, host: "127.0.0.1"},
		{name: "ip host named by a dns name", dns: []string{"127.0.0.1"}, host: "127.0.0.1"},
		{name: "dns host, ip addresses do not hide the common name", cn: "localhost", ips: loopback, host: "localhost"},
		{name: "dns host, an ip address does not name it", ips: loopback, host: "localhost",
			wantText: "valid for 127.0.0.1, not localhost"},
		{name: "no name at all", host: "localhost", wantText: "localhost"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			port := tlsProxy(t, srv.port, issueCert(t, srv.pki, tc.cn, tc.dns, tc.ips))
			creds := baseCreds(srv, roleSCRAM, "verify-full")
			creds["host"], creds["port"], creds["sslrootcert"] = tc.host, fmt.Sprint(port), string(srv.pki.caPEM)
			if tc.sslhost != "" {
				creds["sslhost"] = tc.sslhost
			}
			svc := newService(t, creds, "")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := pgx.Connect(ctx, svc.dsn(""))
			if tc.wantText != "" {
				if err == nil {
					c.Close(ctx)
					t.Fatal("connected, want a certificate name error")
				}
				checkPgError(t, err, codeUnableToConnect, tc.wantText, roleSCRAM.password)
				return
			}
			if err != nil {
				t.Fatalf("connect: %v (broker: %v)", err, svc.lastError())
			}
			defer c.Close(ctx)
			if got := queryString(t, c, "select current_user"); got != roleSCRAM.name {
				t.Errorf("current_user %q", got)
			}
		})
	}
}

// TestSystemRootsRequireVerifyFull: with sslrootcert "system", which
// trusts certificates for any public name, sslmode defaults to
// verify-full and a weaker sslmode is refused, as in libpq 16.
func TestSystemRootsRequireVerifyFull(t *testing.T) {
	tests := []struct {
		name, sslmode string
		wantErr       string
	}{
		{"default becomes verify-full", "", ""},
		{"verify-full", "verify-full", ""},
		{"require refused", "require", `credential sslmode: weak sslmode "require" may not be used with sslrootcert system`},
		{"verify-ca refused", "verify-ca", `weak sslmode "verify-ca"`},
		{"prefer refused", "prefer", `weak sslmode "prefer"`},
		{"disable refused", "disable", `weak sslmode "disable"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			creds := connector.CredentialValuesByID{"host": []byte("db.example"), "username": []byte("u"), "sslrootcert": []byte("system")}
			if tc.sslmode != "" {
				creds["sslmode"] = []byte(tc.sslmode)
			}
			tg, err := parseCredentials(creds)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tg.sslmode != sslVerifyFull || tg.tlsConf == nil || tg.tlsConf.VerifyConnection == nil {
				t.Fatalf("sslmode %s, tls %v", tg.sslmode, tg.tlsConf != nil)
			}
		})
	}
}

// checkPgError checks a client-side error: one ErrorResponse with the code,
// the text in its message or detail, and no password.
func checkPgError(t testing.TB, err error, code, text, password string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("error is not a server ErrorResponse: %v", err)
	}
	if pe.Code != code {
		t.Errorf("SQLSTATE %s (%s), want %s", pe.Code, pe.Message, code)
	}
	if pe.Severity != "FATAL" {
		t.Errorf("severity %s, want FATAL", pe.Severity)
	}
	all := pe.Message + " | " + pe.Detail + " | " + pe.Hint
	if text != "" && !strings.Contains(all, text) {
		t.Errorf("error %q does not mention %q", all, text)
	}
	for _, r := range allRoles {
		shown := err.Error() + all
		if strings.Contains(r.name, r.password) {
			shown = strings.ReplaceAll(shown, r.name, "") // a user named like its password
		}
		if r.password != "" && strings.Contains(shown, r.password) {
			t.Errorf("client error contains the password of %s: %q", r.name, all)
		}
	}
	_ = password
}

// TestClientTLS covers TLS between the client and the broker: libpq's
// sslmodes against a broker with and without a certificate, verify-full of
// the broker's certificate, a broker that requires TLS, and PostgreSQL 17
// direct TLS (pgx sslnegotiation=direct).
func TestClientTLS(t *testing.T) {
	srv := needServer(t)
	tlsCfg := fmt.Sprintf("tls:\n  cert: %s\n  key: %s\n", srv.pki.serverCertFile, srv.pki.serverKeyFile)
	withTLS := newService(t, baseCreds(srv, roleSCRAM, "require"), tlsCfg)
	noTLS := newService(t, baseCreds(srv, roleSCRAM, "require"), "")
	required := newService(t, baseCreds(srv, roleSCRAM, "require"),
		fmt.Sprintf("tls:\n  cert: |\n%s  key: %s\n  require: true\n", indent(string(srv.pki.serverCertPEM), "    "), srv.pki.serverKeyFile))

	psqlCases := []struct {
		name      string
		svc       *service
		env       []string
		wantTLS   bool
		wantError string
		wantLog   string // in the broker's error for the connection
	}{
		{name: "disable", svc: withTLS, env: []string{"PGSSLMODE=disable"}},
		{name: "allow", svc: withTLS, env: []string{"PGSSLMODE=allow"}},
		{name: "prefer", svc: withTLS, env: []string{"PGSSLMODE=prefer"}, wantTLS: true},
		{name: "require", svc: withTLS, env: []string{"PGSSLMODE=require"}, wantTLS: true},
		{name: "verify-full", svc: withTLS, env: []string{"PGSSLMODE=verify-full", "PGHOST=localhost", "PGSSLROOTCERT=" + srv.pki.caFile}, wantTLS: true},
		{name: "no broker tls: disable", svc: noTLS, env: []string{"PGSSLMODE=disable"}},
		{name: "no broker tls: allow", svc: noTLS, env: []string{"PGSSLMODE=allow"}},
		{name: "no broker tls: prefer", svc: noTLS, env: []string{"PGSSLMODE=prefer"}},
		{name: "no broker tls: require fails with libpq's message", svc: noTLS, env: []string{"PGSSLMODE=require"},
			wantError: "server does not support SSL, but SSL was required", wantLog: "the client asked for TLS, which this service does not offer"},
		{name: "tls required: disable refused", svc: required, env: []string{"PGSSLMODE=disable"},
			wantError: "accepts only TLS connections"},
		{name: "tls required: prefer", svc: required, env: []string{"PGSSLMODE=prefer"}, wantTLS: true},
	}
	for _, tc := range psqlCases {
		t.Run("psql "+tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.wantError != "" {
				out := psqlFails(t, srv, tc.svc, tc.env, "select 1")
				if !strings.Contains(out, tc.wantError) {
					t.Errorf("psql output %q does not contain %q", out, tc.wantError)
				}
				if tc.wantLog != "" {
					deadline := time.Now().Add(5 * time.Second)
					for err := tc.svc.lastError(); err == nil || !strings.Contains(err.Error(), tc.wantLog); err = tc.svc.lastError() {
						if time.Now().After(deadline) {
							t.Fatalf("broker error %v, want %q", err, tc.wantLog)
						}
						time.Sleep(10 * time.Millisecond)
					}
				}
				return
			}
			got := runPsql(t, srv, tc.svc, tc.env, "select current_user")
			if got != roleSCRAM.name {
				t.Errorf("psql: %q", got)
			}
		})
	}

	t.Run("lib/pq over tls", func(t *testing.T) {
		db, err := sql.Open("postgres", withTLS.dsn("sslmode=require"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var u string
		if err := db.QueryRow("select current_user").Scan(&u); err != nil || u != roleSCRAM.name {
			t.Fatalf("lib/pq: %v %q", err, u)
		}
		si := withTLS.lastSession()
		if !si.clientTLS {
			t.Errorf("client leg not encrypted")
		}
	})
	t.Run("pgx verify-full large result over tls", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=localhost port=%d dbname=%s user=x sslmode=verify-full sslrootcert=%s",
			withTLS.port, testDB, srv.pki.caFile))
		if err != nil {
			t.Fatal(err)
		}
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connect: %v (broker %v)", err, withTLS.lastError())
		}
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, "select length(string_agg(md5(i::text), '')) from generate_series(1, 200000) i").Scan(&n); err != nil || n != 200000*32 {
			t.Fatalf("query: %v %d", err, n)
		}
		var s string
		if err := c.QueryRow(ctx, "select repeat('x', 8 << 20)").Scan(&s); err != nil || len(s) != 8<<20 {
			t.Fatalf("8 MB row over client TLS: %v %d", err, len(s))
		}
	})
	t.Run("direct tls", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dsn := fmt.Sprintf("host=localhost port=%d dbname=%s user=x sslmode=verify-full sslnegotiation=direct sslrootcert=%s",
			withTLS.port, testDB, srv.pki.caFile)
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("direct tls: %v (broker %v)", err, withTLS.lastError())
		}
		defer c.Close(ctx)
		if got := queryString(t, c, "select current_user"); got != roleSCRAM.name {
			t.Errorf("current_user %q", got)
		}
	})
	t.Run("direct tls refused cleanly without a certificate", func(t *testing.T) {
		raw, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", noTLS.port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"postgresql"}})
		err = tc.Handshake()
		if err == nil || !strings.Contains(err.Error(), "handshake failure") {
			t.Fatalf("handshake error %v, want a TLS handshake_failure alert", err)
		}
	})
	t.Run("direct tls without alpn refused", func(t *testing.T) {
		raw, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", withTLS.port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		code, msg := readErrorResponse(t, tc)
		if code != codeProtocolViolation || !strings.Contains(msg, "ALPN") {
			t.Errorf("got %s %q", code, msg)
		}
	})
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	return b.String()
}
