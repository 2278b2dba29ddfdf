package pg

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

const poolConfig = "serverPool: {maxIdle: 4, idleTimeout: 1m}"

// waitPool waits until the service's pool holds n idle connections, as
// the connector reports them for the broker's idle-connections gauge.
func waitPool(t *testing.T, svc *service, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for svc.conn.IdleConnections() != n {
		if time.Now().After(deadline) {
			t.Fatalf("pool holds %d idle connections, want %d", svc.conn.IdleConnections(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func backendPID(t *testing.T, c *pgx.Conn) string {
	t.Helper()
	return queryString(t, c, "select pg_backend_pid()::text")
}

// closeConn ends a pgx session the way clients do: Terminate, then close.
func closeConn(t *testing.T, c *pgx.Conn) {
	t.Helper()
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestServerPool drives a service with serverPool against the real server:
// a cleanly ended session's backend serves the next identical client with
// its state reset; everything else gets a new backend.
func TestServerPool(t *testing.T) {
	srv := needServer(t)
	// What random() gives first after setseed(0.5), in a session of its own.
	var seeded string
	srv.queryRow(t, &seeded, "with s as materialized (select setseed(0.5)) select random()::text from s")
	for _, sslmode := range []string{"disable", "require"} {
		t.Run("reused and reset/"+sslmode, func(t *testing.T) {
			t.Parallel()
			svc := newService(t, baseCreds(srv, roleSCRAM, sslmode), poolConfig)
			c1 := svc.connect(t, "")
			pid := backendPID(t, c1)
			for _, sql := range []string{
				"set datestyle = 'SQL, DMY'",
				"set application_name = 'changed'",
				"prepare p as select 1",
				"create temp table tt(a int)",
				"listen chan",
				"select pg_advisory_lock(42)",
				"select setseed(0.5)",
			} {
				if _, err := c1.Exec(context.Background(), sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			key1 := c1.PgConn().SecretKey()
			closeConn(t, c1)
			waitPool(t, svc, 1)

			c2 := svc.connect(t, "")
			if got := backendPID(t, c2); got != pid {
				t.Fatalf("second session has backend %s, want the reused %s", got, pid)
			}
			if !strings.Contains(svc.lastSession().auth, "reused") {
				t.Errorf("session auth %q does not say reused", svc.lastSession().auth)
			}
			if bytes.Equal(c2.PgConn().SecretKey(), key1) {
				t.Error("the second client got the first client's cancel key")
			}
			if got := c2.PgConn().ParameterStatus("DateStyle"); got != "ISO, MDY" {
				t.Errorf("greeting DateStyle %q, want the reset ISO, MDY", got)
			}
			if got := c2.PgConn().ParameterStatus("application_name"); got != "" {
				t.Errorf("greeting application_name %q, want empty", got)
			}
			checks := map[string]string{
				"select current_setting('datestyle')":                                "ISO, MDY",
				"select current_setting('application_name')":                         "",
				"select count(*)::text from pg_prepared_statements where name = 'p'": "0",
				"select coalesce(to_regclass('pg_temp.tt')::text, 'none')":           "none",
				"select count(*)::text from pg_listening_channels()":                 "0",
				"select count(*)::text from pg_locks where locktype = 'advisory'":    "0",
				// the first client's setseed does not decide this random()
				"select (random() <> " + seeded + ")::text": "true",
				"select current_user":                       roleSCRAM.name,
			}
			for sql, want := range checks {
				if got := queryString(t, c2, sql); got != want {
					t.Errorf("%s = %q, want %q", sql, got, want)
				}
			}
		})
	}

	t.Run("bulk traffic keeps the framing", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c1 := svc.connect(t, "")
		pid := backendPID(t, c1)
		ctx := context.Background()
		if _, err := c1.Exec(ctx, "create temp table bulk(a int, b text)"); err != nil {
			t.Fatal(err)
		}
		rows := make([][]any, 50000)
		for i := range rows {
			rows[i] = []any{i, strings.Repeat("x", i%300)}
		}
		if _, err := c1.CopyFrom(ctx, pgx.Identifier{"bulk"}, []string{"a", "b"}, pgx.CopyFromRows(rows)); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := c1.PgConn().CopyTo(ctx, &out, "copy bulk to stdout"); err != nil {
			t.Fatal(err)
		}
		// A pipeline of extended-protocol queries, and an error in the middle.
		batch := &pgx.Batch{}
		for i := 0; i < 200; i++ {
			batch.Queue("select $1::int + 1", i)
		}
		if err := c1.SendBatch(ctx, batch).Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := c1.Exec(ctx, "select 1/0"); err == nil {
			t.Fatal("division by zero succeeded")
		}
		closeConn(t, c1)
		reusedConn(t, svc, pid)
	})

	t.Run("open transaction is not reused", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c1 := svc.connect(t, "")
		pid := backendPID(t, c1)
		if _, err := c1.Exec(context.Background(), "begin"); err != nil {
			t.Fatal(err)
		}
		closeConn(t, c1)
		// The old backend goes away: its transaction is rolled back.
		waitRetired(t, srv, svc, pid)
		c2 := svc.connect(t, "")
		if got := backendPID(t, c2); got == pid {
			t.Fatal("a session left in a transaction was reused")
		}
	})

	t.Run("client gone without Terminate is not reused", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c1 := svc.connect(t, "")
		pid := backendPID(t, c1)
		_ = c1.PgConn().Conn().Close() // no Terminate
		time.Sleep(200 * time.Millisecond)
		c2 := svc.connect(t, "")
		if got := backendPID(t, c2); got == pid {
			t.Fatal("a session whose client vanished was reused")
		}
	})

	t.Run("Terminate ends the session at once", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c1 := svc.connect(t, "")
		pid := backendPID(t, c1)
		// Like a driver that sends Terminate and waits for the server to
		// close: it must see EOF, not wait forever.
		nc := c1.PgConn().Conn()
		if _, err := nc.Write(terminateMsg); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, err := nc.Read(make([]byte, 64)); err != io.EOF {
			t.Fatalf("after Terminate: read %d bytes, %v; want EOF", n, err)
		}
		_ = nc.Close()
		reusedConn(t, svc, pid)
	})

	t.Run("Terminate behind a query is forwarded", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c1 := svc.connect(t, "")
		nc := c1.PgConn().Conn()
		q, _ := (&pgproto3.Query{String: "select 42"}).Encode(nil)
		if _, err := nc.Write(append(q, terminateMsg...)); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(3 * time.Second))
		got, err := io.ReadAll(nc)
		if err != nil {
			t.Fatal(err)
		}
		// RowDescription, DataRow "42", CommandComplete, ReadyForQuery, then EOF.
		if !bytes.Contains(got, []byte("SELECT 1")) || got[len(got)-6] != 'Z' {
			t.Fatalf("response before EOF: %q", got)
		}
		time.Sleep(100 * time.Millisecond)
		if n := svc.conn.pool.size(); n != 0 {
			t.Fatalf("pool holds %d connections; the server should have ended this session", n)
		}
	})

	t.Run("startup parameters must match", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c1 := svc.connect(t, "application_name=a")
		pidA := backendPID(t, c1)
		closeConn(t, c1)
		waitPool(t, svc, 1)
		c2 := svc.connect(t, "application_name=b")
		if got := backendPID(t, c2); got == pidA {
			t.Fatal("application_name=b got the session opened for application_name=a")
		}
		if got := queryString(t, c2, "select current_setting('application_name')"); got != "b" {
			t.Fatalf("application_name %q", got)
		}
		c3 := svc.connect(t, "application_name=a")
		if got := backendPID(t, c3); got != pidA {
			for _, l := range svc.log.lines() {
				t.Log(l)
			}
			t.Fatalf("application_name=a got backend %s, want the pooled %s", got, pidA)
		}
	})

	t.Run("rotated password is never served from the pool", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c1 := svc.connect(t, "")
		pid := backendPID(t, c1)
		closeConn(t, c1)
		waitPool(t, svc, 1)
		svc.setCred("password", "not-the-Secret-0x")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, svc.dsn("")); err == nil {
			got := backendPID(t, c)
			c.Close(ctx)
			t.Fatalf("connected with a wrong password (backend %s, pooled %s)", got, pid)
		} else if code := pgErrCode(err); code != "28P01" {
			t.Fatalf("error %v (SQLSTATE %q), want 28P01", err, code)
		}
		svc.setCred("password", roleSCRAM.password)
		c2 := svc.connect(t, "")
		if got := backendPID(t, c2); got != pid {
			t.Fatalf("backend %s, want the pooled %s", got, pid)
		}
	})

	t.Run("server ends an idle pooled connection", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c1 := svc.connect(t, "")
		pid := backendPID(t, c1)
		closeConn(t, c1)
		waitPool(t, svc, 1)
		srv.exec(t, "select pg_terminate_backend($1::int)", pid)
		waitBackendGone(t, srv, pid)
		time.Sleep(50 * time.Millisecond) // the FATAL and FIN reach the broker's socket
		c2 := svc.connect(t, "")
		if got := backendPID(t, c2); got == pid {
			t.Fatal("terminated backend handed out")
		}
		if got := queryString(t, c2, "select 'works'"); got != "works" {
			t.Fatalf("query: %q", got)
		}
	})

	t.Run("cancel keys are per client", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c1 := svc.connect(t, "")
		pid := c1.PgConn().PID()
		oldKey := c1.PgConn().SecretKey()
		closeConn(t, c1)
		waitPool(t, svc, 1)
		c2 := svc.connect(t, "")
		if c2.PgConn().PID() != pid {
			t.Fatalf("backend %d, want the pooled %d", c2.PgConn().PID(), pid)
		}
		done := make(chan error, 1)
		go func() {
			_, err := c2.Exec(context.Background(), "select pg_sleep(2)")
			done <- err
		}()
		time.Sleep(300 * time.Millisecond)
		// The former client's key must not cancel the new client's query.
		if err := sendCancel(svc, pid, oldKey); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			t.Fatalf("query ended early (%v): the stale key cancelled it", err)
		case <-time.After(700 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c2.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if code := pgErrCode(err); code != "57014" {
				t.Fatalf("error %v (SQLSTATE %q), want 57014", err, code)
			}
		case <-time.After(1500 * time.Millisecond):
			t.Fatal("the client's own cancel key did not cancel its query")
		}
	})

	t.Run("pgbench reconnecting", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		script := filepath.Join(t.TempDir(), "q.sql")
		if err := os.WriteFile(script, []byte("select count(*) from pg_class;\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := runTool(t, srv, svc, nil, "pgbench", "-n", "-C", "-c", "2", "-t", "50", "-f", script)
		if err != nil {
			t.Fatalf("pgbench: %v\n%s", err, out)
		}
		reused := 0
		svc.mu.Lock()
		for _, si := range svc.sessions {
			if strings.Contains(si.auth, "reused") {
				reused++
			}
		}
		total := len(svc.sessions)
		svc.mu.Unlock()
		if total < 100 || reused < total/2 {
			t.Fatalf("%d of %d sessions reused a server connection", reused, total)
		}
	})
}

// TestFrameScanner: the scanner finds the same messages however the stream
// is cut into chunks.
func TestFrameScanner(t *testing.T) {
	var stream []byte
	var want []frameEvent
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		typ := "QZDXSCE"[r.IntN(7)]
		body := make([]byte, r.IntN(40))
		if typ == 'Z' {
			body = []byte{"ITE"[r.IntN(3)]}
		}
		want = append(want, frameEvent{typ: typ, body0: -1})
		if typ == 'Z' {
			want = append(want, frameEvent{typ: typ, body0: int(body[0])})
		}
		stream = append(stream, typ, 0, 0, 0, byte(4+len(body)))
		stream = append(stream, body...)
	}
	for _, name := range []string{"whole", "bytes", "random"} {
		t.Run(name, func(t *testing.T) {
			var f frameScanner
			var got []frameEvent
			feed := func(p []byte) {
				f.scan(p, func(b byte) bool { return b == 'Z' }, func(ev frameEvent) bool {
					got = append(got, frameEvent{typ: ev.typ, body0: ev.body0})
					return true
				})
			}
			switch name {
			case "whole":
				feed(stream)
			case "bytes":
				for i := range stream {
					feed(stream[i : i+1])
				}
			default:
				for rest := stream; len(rest) > 0; {
					n := min(1+r.IntN(17), len(rest))
					feed(rest[:n])
					rest = rest[n:]
				}
			}
			if !f.atBoundary() {
				t.Error("not at a boundary at the end of the stream")
			}
			if len(got) != len(want) {
				t.Fatalf("%d events, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("event %d = %+v, want %+v", i, got[i], want[i])
				}
			}
		})
	}
	t.Run("bad length", func(t *testing.T) {
		var f frameScanner
		f.scan([]byte{'Q', 0, 0, 0, 3}, nil, func(frameEvent) bool { return true })
		if !f.bad || f.atBoundary() {
			t.Fatal("a length below 4 was accepted")
		}
	})
}

// FuzzFrameScanner: no input panics, and a stream cut in two gives the
// same events as the whole stream.
func FuzzFrameScanner(f *testing.F) {
	f.Add([]byte("Z\x00\x00\x00\x05IQ\x00\x00\x00\x09select"), 3)
	f.Add([]byte{'X', 0, 0, 0, 4}, 2)
	f.Fuzz(func(t *testing.T, stream []byte, cut int) {
		events := func(chunks ...[]byte) ([]frameEvent, bool) {
			var fs frameScanner
			var out []frameEvent
			for _, c := range chunks {
				fs.scan(c, func(b byte) bool { return b == 'Z' }, func(ev frameEvent) bool {
					out = append(out, frameEvent{typ: ev.typ, body0: ev.body0})
					return true
				})
			}
			return out, fs.bad
		}
		whole, bad1 := events(stream)
		if cut < 0 {
			cut = -cut
		}
		if len(stream) > 0 {
			cut %= len(stream) + 1
		} else {
			cut = 0
		}
		split, bad2 := events(stream[:cut], stream[cut:])
		if bad1 != bad2 || len(whole) != len(split) {
			t.Fatalf("whole %v (bad %v), split at %d %v (bad %v)", whole, bad1, cut, split, bad2)
		}
		for i := range whole {
			if whole[i] != split[i] {
				t.Fatalf("event %d differs: %+v vs %+v", i, whole[i], split[i])
			}
		}
	})
}

// rawClient speaks the protocol directly, for what pgx does not let a test
// do (replication commands, a Parse without Sync, a bare Terminate).
type rawClient struct {
	conn net.Conn
	fe   *pgproto3.Frontend
	pid  uint32
	key  []byte
}

func rawDial(t *testing.T, svc *service, params map[string]string) *rawClient {
	t.Helper()
	c, _ := dialClient(t, svc, false)
	if params == nil {
		params = map[string]string{"user": "anyone", "database": testDB}
	}
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: params})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	rc := &rawClient{conn: c, fe: fe}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("startup: %v (broker: %v)", err, svc.lastError())
		}
		switch m := m.(type) {
		case *pgproto3.BackendKeyData:
			rc.pid, rc.key = m.ProcessID, bytes.Clone(m.SecretKey)
		case *pgproto3.ErrorResponse:
			t.Fatalf("startup: %s %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return rc
		}
	}
}

// query runs sql and returns the error SQLSTATE ("" for none).
func (rc *rawClient) query(t *testing.T, sql string) string {
	t.Helper()
	rc.fe.Send(&pgproto3.Query{String: sql})
	if err := rc.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	code := ""
	for {
		m, err := rc.fe.Receive()
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			code = m.Code
		case *pgproto3.ReadyForQuery:
			return code
		}
	}
}

// sendCancel sends a CancelRequest to the service on a new connection and
// waits until the broker closes it (once the request is forwarded or
// dropped).
func sendCancel(svc *service, pid uint32, key []byte) error {
	cc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", svc.port))
	if err != nil {
		return err
	}
	defer cc.Close()
	_ = cc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := cc.Write(encodeCancelRequest(pid, key)); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, cc)
	return err
}

// terminate sends Terminate and closes, as libpq does.
func (rc *rawClient) terminate() {
	_, _ = rc.conn.Write(terminateMsg)
	_ = rc.conn.Close()
}

// waitBackendGone waits until the server has no backend with this pid
// (a number, or its decimal text).
func waitBackendGone[P uint32 | string](t *testing.T, srv *pgServer, pid P) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		srv.queryRow(t, &n, "select count(*)::int from pg_stat_activity where pid = $1::int", fmt.Sprint(pid))
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %v still there", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServerPoolRetires covers the sessions a pool must not keep.
func TestServerPoolRetires(t *testing.T) {
	srv := needServer(t)
	t.Run("replication session", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleReplicator, "disable"), poolConfig)
		params := map[string]string{"user": "x", "database": testDB, "replication": "database"}
		rc := rawDial(t, svc, params)
		if code := rc.query(t, "CREATE_REPLICATION_SLOT pool_tmp_slot TEMPORARY PHYSICAL RESERVE_WAL"); code != "" {
			t.Fatalf("create slot: SQLSTATE %s", code)
		}
		rc.terminate()
		waitBackendGone(t, srv, rc.pid)
		var n int
		srv.queryRow(t, &n, "select count(*)::int from pg_replication_slots where slot_name = 'pool_tmp_slot'")
		if n != 0 || svc.conn.pool.size() != 0 {
			t.Fatalf("temporary slot left: %d; pool size %d", n, svc.conn.pool.size())
		}
	})

	// State that DISCARD ALL leaves and that the end of a session clears.
	for _, tc := range []struct {
		name  string
		role  role
		sql   []string
		reuse bool   // the backend may serve the next client (after a cleanup)
		check string // run by the next client, must give "ok"
	}{
		{name: "temporary replication slot", role: roleReplicator,
			sql: []string{"select pg_create_physical_replication_slot('pool_sql_slot', true, true)"}},
		{name: "replication origin session", role: roleBackup,
			sql: []string{"select pg_replication_origin_create('pool_origin')", "select pg_replication_origin_session_setup('pool_origin')"}},
		{name: "backup in progress", role: roleBackup, reuse: true,
			sql:   []string{"select pg_backup_start('pool-test', true)"},
			check: "select pg_backup_start('again', true) is not null and pg_backup_stop(false) is not null"},
		{name: "privileged role, nothing left", role: roleBackup, reuse: true,
			sql: []string{"select 1"}, check: "select not pg_replication_origin_session_is_setup()"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := newService(t, baseCreds(srv, tc.role, "disable"), poolConfig)
			c1 := svc.connect(t, "")
			pid := backendPID(t, c1)
			for _, sql := range tc.sql {
				if _, err := c1.Exec(context.Background(), sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			closeConn(t, c1)
			if !tc.reuse {
				waitBackendGone(t, srv, pid)
				var n int
				srv.queryRow(t, &n, "select count(*)::int from pg_replication_slots where slot_name = 'pool_sql_slot'")
				if n != 0 || svc.conn.pool.size() != 0 {
					t.Fatalf("slot left: %d; pool size %d", n, svc.conn.pool.size())
				}
				return
			}
			// Twice: the first reset learns the role's privileges, the
			// second checks them in the same round trip as DISCARD ALL.
			for round := 1; round <= 2; round++ {
				c2 := reusedConn(t, svc, pid)
				var ok bool
				if err := c2.QueryRow(context.Background(), tc.check).Scan(&ok); err != nil || !ok {
					t.Fatalf("round %d: %s: %v, %v", round, tc.check, ok, err)
				}
				for _, sql := range tc.sql {
					if _, err := c2.Exec(context.Background(), sql); err != nil {
						t.Fatalf("%s: %v", sql, err)
					}
				}
				closeConn(t, c2)
			}
		})
	}

	t.Run("replication origin found by a later reset", func(t *testing.T) {
		svc := newService(t, baseCreds(srv, roleBackup, "disable"), poolConfig)
		c1 := svc.connect(t, "")
		pid := backendPID(t, c1)
		closeConn(t, c1)
		waitPool(t, svc, 1) // this reset learnt the role's privileges
		c2 := svc.connect(t, "")
		if got := backendPID(t, c2); got != pid {
			t.Fatalf("backend %s not reused (was %s)", got, pid)
		}
		for _, sql := range []string{"select pg_replication_origin_create('pool_origin_late')", "select pg_replication_origin_session_setup('pool_origin_late')"} {
			if _, err := c2.Exec(context.Background(), sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		closeConn(t, c2)
		waitRetired(t, srv, svc, pid)
	})

	t.Run("a matched cancel key", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		rc := rawDial(t, svc, nil)
		if err := sendCancel(svc, rc.pid, rc.key); err != nil {
			t.Fatal(err)
		}
		rc.terminate()
		// Such a cancel may reach the server after the next client
		// started, so the backend must not serve one.
		waitRetired(t, srv, svc, rc.pid)
	})

	t.Run("cancel racing a Terminate never hits the next client", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), "serverPool: {maxIdle: 1}")
		for i := 0; i < 15; i++ {
			a := rawDial(t, svc, nil)
			sent := make(chan struct{})
			go func(pid uint32, key []byte) {
				defer close(sent)
				_ = sendCancel(svc, pid, key)
			}(a.pid, a.key)
			time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
			a.terminate()
			v := rawDial(t, svc, nil)
			if code := v.query(t, "select pg_sleep(0.05)"); code != "" {
				t.Fatalf("round %d: the next client's query failed with %s (backend %d, former client's %d)", i, code, v.pid, a.pid)
			}
			v.terminate()
			<-sent
		}
	})

	t.Run("error without Sync", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		rc := rawDial(t, svc, nil)
		rc.fe.Send(&pgproto3.Parse{Query: "selec broken"})
		rc.fe.Send(&pgproto3.Flush{})
		if err := rc.fe.Flush(); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := rc.fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m.(*pgproto3.ErrorResponse); ok {
				break
			}
		}
		rc.terminate()
		// The Terminate goes to the server, which ends the session now.
		waitRetired(t, srv, svc, rc.pid)
	})

	t.Run("maxLifetime", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), "serverPool: {maxIdle: 2, maxLifetime: 1s}")
		a := rawDial(t, svc, nil)
		a.terminate()
		waitPool(t, svc, 1)
		time.Sleep(1100 * time.Millisecond)
		b := rawDial(t, svc, nil)
		if b.pid == a.pid {
			t.Fatal("a connection older than maxLifetime was reused")
		}
	})
}

// TestServerPoolGreeting: a reused connection's greeting reports the
// settings' current values, also those that changed without the session
// doing anything (ALTER SYSTEM and a reload). Not parallel: it changes the
// server's configuration for a moment.
func TestServerPoolGreeting(t *testing.T) {
	srv := needServer(t)
	svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
	c1 := svc.connect(t, "")
	before := c1.PgConn().ParameterStatus("TimeZone")
	srv.exec(t, "alter system set timezone = 'Asia/Tokyo'")
	srv.exec(t, "select pg_reload_conf()")
	defer func() {
		srv.exec(t, "alter system reset timezone")
		srv.exec(t, "select pg_reload_conf()")
	}()
	deadline := time.Now().Add(5 * time.Second)
	for queryString(t, c1, "select current_setting('timezone')") != "Asia/Tokyo" {
		if time.Now().After(deadline) {
			t.Fatal("reload not seen")
		}
		time.Sleep(20 * time.Millisecond)
	}
	pid := backendPID(t, c1)
	closeConn(t, c1)
	c2 := reusedConn(t, svc, pid)
	if got := c2.PgConn().ParameterStatus("TimeZone"); got != "Asia/Tokyo" {
		t.Fatalf("greeting TimeZone %q (was %q before the reload), want Asia/Tokyo", got, before)
	}
}

// TestCancelAcrossConnectors: a CancelRequest reaches a session that another
// connector of the process opened, as after a reload that changed the
// session's service (the new connector serves the listener).
func TestCancelAcrossConnectors(t *testing.T) {
	srv := needServer(t)
	for _, config := range []string{"", poolConfig} {
		t.Run("config "+strings.TrimSpace(config), func(t *testing.T) {
			before := newService(t, baseCreds(srv, roleSCRAM, "disable"), config)
			after := newService(t, baseCreds(srv, roleSCRAM, "disable"), config)
			rc := rawDial(t, before, nil)
			rc.fe.Send(&pgproto3.Query{String: "select pg_sleep(20)"})
			if err := rc.fe.Flush(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			start := time.Now()
			if err := sendCancel(after, rc.pid, rc.key); err != nil {
				t.Fatal(err)
			}
			for {
				m, err := rc.fe.Receive()
				if err != nil {
					t.Fatal(err)
				}
				if e, ok := m.(*pgproto3.ErrorResponse); ok {
					if e.Code != "57014" {
						t.Fatalf("got %s %s, want 57014", e.Code, e.Message)
					}
					break
				}
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("the cancel took %s", d)
			}
		})
	}
}

// TestServerPoolClose: closing the connector (as the broker does when its
// service stops) ends the idle server sessions.
func TestServerPoolClose(t *testing.T) {
	srv := needServer(t)
	svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
	c := svc.connect(t, "")
	pid := backendPID(t, c)
	closeConn(t, c)
	waitPool(t, svc, 1)
	if err := svc.conn.Close(); err != nil {
		t.Fatal(err)
	}
	waitBackendGone(t, srv, pid)
	if n := svc.conn.pool.size(); n != 0 {
		t.Fatalf("pool size %d after Close", n)
	}
}

// waitRetired waits until the server session of pid is gone, and checks
// that the pool kept nothing.
func waitRetired[P uint32 | string](t *testing.T, srv *pgServer, svc *service, pid P) {
	t.Helper()
	waitBackendGone(t, srv, pid)
	if n := svc.conn.pool.size(); n != 0 {
		t.Fatalf("pool size %d", n)
	}
}

// reusedConn waits until the pool holds one connection, connects, and
// checks that the session runs on the pooled backend pid.
func reusedConn(t *testing.T, svc *service, pid string) *pgx.Conn {
	t.Helper()
	waitPool(t, svc, 1)
	c := svc.connect(t, "")
	if got := backendPID(t, c); got != pid {
		t.Fatalf("backend %s, want the pooled %s", got, pid)
	}
	return c
}

// TestServerPoolLifecycle covers when the pool lets a backend go: at
// maxLifetime while idle, to make room when full, to a server out of
// connection slots, and when the service stops while a reset is running.
func TestServerPoolLifecycle(t *testing.T) {
	srv := needServer(t)
	// session runs one session with the given startup option and returns
	// its backend pid once it has ended.
	session := func(t *testing.T, svc *service, extra string) string {
		t.Helper()
		c := svc.connect(t, extra)
		pid := backendPID(t, c)
		closeConn(t, c)
		return pid
	}
	t.Run("idle past maxLifetime is ended", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), "serverPool: {maxIdle: 4, idleTimeout: 1m, maxLifetime: 1s}")
		pid := session(t, svc, "application_name=lifetime")
		waitPool(t, svc, 1)
		waitRetired(t, srv, svc, pid) // within 5 s, long before idleTimeout
	})
	t.Run("a full pool ends its longest-idle connection", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), "serverPool: {maxIdle: 1, idleTimeout: 1m}")
		first := session(t, svc, "application_name=full_a")
		waitPool(t, svc, 1)
		second := session(t, svc, "application_name=full_b")
		waitBackendGone(t, srv, first)
		waitPool(t, svc, 1)
		c := svc.connect(t, "application_name=full_b")
		if got := backendPID(t, c); got != second {
			t.Errorf("backend %s, want the pooled %s", got, second)
		}
	})
	t.Run("a server out of slots gets an idle connection back", func(t *testing.T) {
		t.Parallel()
		// The role may hold one connection: the pooled one, under another
		// key. Without giving it back, the server refuses with 53300.
		svc := newService(t, baseCreds(srv, roleLimitOne, "disable"), "serverPool: {maxIdle: 4, idleTimeout: 1m}")
		held := session(t, svc, "application_name=slot_a")
		waitPool(t, svc, 1)
		c := svc.connect(t, "application_name=slot_b")
		if got := backendPID(t, c); got == held {
			t.Errorf("got the pooled backend %s under another key", got)
		}
		waitBackendGone(t, srv, held)
	})
	t.Run("stopping the service ends a connection whose reset was running", func(t *testing.T) {
		t.Parallel()
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c := svc.connect(t, "application_name=stopping")
		pid := backendPID(t, c)
		closeConn(t, c)
		// The service stops right after its session ended: the reset may be
		// running, or about to start.
		if err := svc.conn.Close(); err != nil {
			t.Fatal(err)
		}
		waitBackendGone(t, srv, pid)
		if n := svc.conn.IdleConnections(); n != 0 {
			t.Fatalf("a stopped pool holds %d connections", n)
		}
	})
}
