package pg

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	_ "github.com/lib/pq"
)

// TestAuthMatrix logs in with every authentication method the server can
// ask for, for roles stored as md5 and as SCRAM, over plaintext and TLS.
func TestAuthMatrix(t *testing.T) {
	srv := needServer(t)
	tests := []struct {
		name     string
		role     role
		sslmode  string
		extra    map[string]string
		password string // overrides role.password when set
		wantAuth string
		wantTLS  bool
	}{
		{name: "scram stored scram", role: roleSCRAM, sslmode: "disable", wantAuth: mechSCRAM},
		{name: "scram plus over tls", role: roleSCRAM, sslmode: "require", wantAuth: mechSCRAMPlus, wantTLS: true},
		{name: "md5 stored md5", role: roleMD5, sslmode: "disable", wantAuth: "md5"},
		{name: "md5 over tls", role: roleMD5, sslmode: "require", wantAuth: "md5", wantTLS: true},
		{name: "md5 hba with scram stored uses scram", role: roleMD5SCRAM, sslmode: "disable", wantAuth: mechSCRAM},
		{name: "password stored scram", role: rolePassword, sslmode: "disable", wantAuth: "password"},
		{name: "password stored md5", role: rolePasswordM, sslmode: "require", wantAuth: "password", wantTLS: true},
		{name: "trust", role: roleTrust, sslmode: "disable", wantAuth: "trust"},
		{name: "saslprep decomposed password", role: roleUnicode, sslmode: "disable",
			password: "pa\u0308sswo\u0308rd-Se\u0301cret", wantAuth: mechSCRAM},
		{name: "saslprep composed password", role: roleUnicode, sslmode: "disable", wantAuth: mechSCRAM},
		{name: "saslprep with a character newer than unicode 3.2", role: roleUnicodeNew, sslmode: "disable", wantAuth: mechSCRAM},
		{name: "saslprep with a character from unicode 4.0", role: roleUnicode40, sslmode: "disable", wantAuth: mechSCRAM},
		{name: "client certificate", role: roleCert, sslmode: "verify-full", wantAuth: "trust", wantTLS: true,
			extra: map[string]string{"host": "localhost", "sslrootcert": srv.pki.caFile,
				"sslcert": string(srv.pki.clientCertPEM), "sslkey": srv.pki.clientKeyFile}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			creds := baseCreds(srv, tc.role, tc.sslmode)
			if tc.password != "" {
				creds["password"] = tc.password
			}
			for k, v := range tc.extra {
				creds[k] = v
			}
			svc := newService(t, creds, "")
			c := svc.connect(t, "password=ignored-by-the-broker")
			if got := queryString(t, c, "select current_user"); got != tc.role.name {
				t.Errorf("current_user = %q, want %q", got, tc.role.name)
			}
			if got := queryString(t, c, "select ssl::text from pg_stat_ssl where pid = pg_backend_pid()"); got != map[bool]string{true: "true", false: "false"}[tc.wantTLS] {
				t.Errorf("pg_stat_ssl.ssl = %s, want %v", got, tc.wantTLS)
			}
			si := svc.lastSession()
			if si.auth != tc.wantAuth || si.tls != tc.wantTLS {
				t.Errorf("session auth %q tls %v, want %q %v", si.auth, si.tls, tc.wantAuth, tc.wantTLS)
			}
		})
	}
}

// TestClients drives the broker with psql, pgbench, pgx and lib/pq over
// both the TCP and the unix socket listener.
func TestClients(t *testing.T) {
	srv := needServer(t)
	svc := newService(t, baseCreds(srv, roleSCRAM, "require"), "")
	t.Run("psql tcp", func(t *testing.T) {
		out := runPsql(t, srv, svc, nil, "select current_user || ' ' || current_database()")
		if out != roleSCRAM.name+" "+testDB {
			t.Errorf("psql: %q", out)
		}
	})
	t.Run("psql unix socket", func(t *testing.T) {
		out := runPsql(t, srv, svc, []string{"PGHOST=" + svc.sockDir}, "select current_user")
		if out != roleSCRAM.name {
			t.Errorf("psql: %q", out)
		}
	})
	t.Run("pgx unix socket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := svc.connect(t, "host="+svc.sockDir)
		var n int
		if err := c.QueryRow(ctx, "select $1::int + 1", 41).Scan(&n); err != nil || n != 42 {
			t.Fatalf("extended protocol query: %v %d", err, n)
		}
	})
	t.Run("lib/pq", func(t *testing.T) {
		db, err := sql.Open("postgres", svc.dsn(""))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var u string
		if err := db.QueryRow("select current_user").Scan(&u); err != nil || u != roleSCRAM.name {
			t.Fatalf("lib/pq: %v %q", err, u)
		}
		// Prepared statement with parameters: extended protocol.
		var n int
		if err := db.QueryRow("select $1::int * 2", 21).Scan(&n); err != nil || n != 42 {
			t.Fatalf("lib/pq prepared: %v %d", err, n)
		}
	})
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"pgbench tcp reconnecting", nil},
		{"pgbench unix socket", []string{"PGHOST=" + svc.sockDir}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script := t.TempDir() + "/s.sql"
			if err := writeFile(script, "select 1;\n"); err != nil {
				t.Fatal(err)
			}
			out, err := runTool(t, srv, svc, tc.env, "pgbench", "-n", "-C", "-c", "2", "-t", "25", "-f", script)
			if err != nil || !strings.Contains(out, "number of failed transactions: 0") {
				t.Fatalf("pgbench: %v\n%s", err, out)
			}
		})
	}
}
