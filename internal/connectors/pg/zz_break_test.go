package pg

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

type rawClient struct {
	conn net.Conn
	fe   *pgproto3.Frontend
	pid  uint32
	key  []byte
}

func rawDial(t *testing.T, addr string, params map[string]string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	if params == nil {
		params = map[string]string{"user": "anyone", "database": testDB}
	}
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: params})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	rc := &rawClient{conn: c, fe: fe}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("startup: %v", err)
		}
		switch m := m.(type) {
		case *pgproto3.BackendKeyData:
			rc.pid, rc.key = m.ProcessID, append([]byte(nil), m.SecretKey...)
		case *pgproto3.ErrorResponse:
			t.Fatalf("startup error: %+v", m)
		case *pgproto3.ReadyForQuery:
			return rc
		}
	}
}

// until reads messages until one of type T; returns all messages seen.
func (rc *rawClient) until(t *testing.T, pred func(pgproto3.BackendMessage) bool) []string {
	t.Helper()
	var seen []string
	for {
		m, err := rc.fe.Receive()
		if err != nil {
			t.Fatalf("receive: %v (seen %v)", err, seen)
		}
		seen = append(seen, fmt.Sprintf("%T", m))
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			seen = append(seen, e.Code+" "+e.Message)
		}
		if pred(m) {
			return seen
		}
	}
}

func isRFQ(m pgproto3.BackendMessage) bool { _, ok := m.(*pgproto3.ReadyForQuery); return ok }
func isCC(m pgproto3.BackendMessage) bool  { _, ok := m.(*pgproto3.CommandComplete); return ok }

func (rc *rawClient) query(t *testing.T, sql string) []string {
	t.Helper()
	rc.fe.Send(&pgproto3.Query{String: sql})
	if err := rc.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	return rc.until(t, isRFQ)
}

func (rc *rawClient) terminateClose() {
	_, _ = rc.conn.Write(terminateMsg)
	_ = rc.conn.Close()
}

func brokerAddr(svc *service) string { return fmt.Sprintf("127.0.0.1:%d", svc.port) }

// 1. Extended protocol without Sync: the client's uncommitted work.
func TestBreakSynclessExecute(t *testing.T) {
	srv := needServer(t)
	srv.exec(t, "drop table if exists brk_t")
	// appdb is owned by scram_user; create the table there as that role.
	svcDirect := newService(t, baseCreds(srv, roleSCRAM, "disable"), "")
	c0 := svcDirect.connect(t, "")
	if _, err := c0.Exec(context.Background(), "create table if not exists brk_t(a int); truncate brk_t"); err != nil {
		t.Fatal(err)
	}
	count := func() string { return queryString(t, c0, "select count(*)::text from brk_t") }

	for _, mode := range []string{"nopool", "pool"} {
		cfg := ""
		if mode == "pool" {
			cfg = poolConfig
		}
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), cfg)
		rc := rawDial(t, brokerAddr(svc), nil)
		rc.query(t, "select 1")
		rc.fe.Send(&pgproto3.Parse{Query: "insert into brk_t values (1)"})
		rc.fe.Send(&pgproto3.Bind{})
		rc.fe.Send(&pgproto3.Execute{})
		rc.fe.Send(&pgproto3.Flush{})
		_ = rc.fe.Flush()
		seen := rc.until(t, isCC)
		t.Logf("%s: execute: %v", mode, seen)
		rc.terminateClose()
		time.Sleep(500 * time.Millisecond)
		t.Logf("%s: rows in brk_t after the client terminated without Sync: %s (pool size %v)", mode, count(), poolSize(svc))
		for _, l := range svc.log.lines() {
			if strings.Contains(l, "pool") || strings.Contains(l, "reus") || strings.Contains(l, "DISCARD") {
				t.Log(l)
			}
		}
	}
}

func poolSize(svc *service) int {
	if svc.conn.pool == nil {
		return -1
	}
	return svc.conn.pool.size()
}

// 2. A client that sends Terminate and waits for the server's EOF.
func TestBreakTerminateWaitEOF(t *testing.T) {
	srv := needServer(t)
	for _, mode := range []string{"nopool", "pool"} {
		cfg := ""
		if mode == "pool" {
			cfg = poolConfig
		}
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), cfg)
		rc := rawDial(t, brokerAddr(svc), nil)
		rc.query(t, "select 1")
		_, _ = rc.conn.Write(terminateMsg)
		_ = rc.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		start := time.Now()
		n, err := rc.conn.Read(make([]byte, 100))
		t.Logf("%s: after Terminate, read = %d, %v after %v", mode, n, err, time.Since(start).Round(time.Millisecond))
		rc.conn.Close()
	}
}

// 3. replication=database session: temporary replication slot survives.
func TestBreakReplicationSlot(t *testing.T) {
	srv := needServer(t)
	creds := baseCreds(srv, roleReplicator, "disable")
	svc := newService(t, creds, poolConfig)
	params := map[string]string{"user": "x", "database": testDB, "replication": "database"}
	rc := rawDial(t, brokerAddr(svc), params)
	t.Logf("pid %d", rc.pid)
	t.Logf("create slot: %v", rc.query(t, "CREATE_REPLICATION_SLOT brk_tmp TEMPORARY PHYSICAL RESERVE_WAL"))
	rc.terminateClose()
	time.Sleep(500 * time.Millisecond)
	t.Logf("pool size %d", poolSize(svc))
	for _, l := range svc.log.lines() {
		t.Log(l)
	}
	rc2 := rawDial(t, brokerAddr(svc), params)
	t.Logf("second pid %d (first %d)", rc2.pid, rc.pid)
	var n int
	srv.queryRow(t, &n, "select count(*)::int from pg_replication_slots where slot_name = 'brk_tmp'")
	t.Logf("slot brk_tmp exists while the second client is connected: %d", n)
	t.Logf("second client's view: %v", rc2.query(t, "select slot_name, active_pid from pg_replication_slots"))
	rc2.terminateClose()
}

// 4. ParameterStatus greeting after a config reload seen by the first client.
func TestBreakStaleGreeting(t *testing.T) {
	srv := needServer(t)
	svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
	c1 := svc.connect(t, "")
	t.Logf("c1 greeting TimeZone %q", c1.PgConn().ParameterStatus("TimeZone"))
	srv.exec(t, "alter system set timezone = 'Asia/Tokyo'")
	srv.exec(t, "select pg_reload_conf()")
	defer func() {
		srv.exec(t, "alter system reset timezone")
		srv.exec(t, "select pg_reload_conf()")
	}()
	time.Sleep(300 * time.Millisecond)
	queryString(t, c1, "select 'x'")
	t.Logf("c1 after reload: ParameterStatus TimeZone %q", c1.PgConn().ParameterStatus("TimeZone"))
	pid := backendPID(t, c1)
	closeConn(t, c1)
	waitPool(t, svc, 1)
	c2 := svc.connect(t, "")
	if backendPID(t, c2) != pid {
		t.Fatal("not reused")
	}
	// Nothing to read before the first query: what the client believes.
	greet := c2.PgConn().ParameterStatus("TimeZone")
	actual := queryString(t, c2, "select current_setting('timezone')")
	after := c2.PgConn().ParameterStatus("TimeZone")
	t.Logf("c2 greeting TimeZone %q, actual %q, after a query %q", greet, actual, after)
	d := svc.connect(t, "application_name=fresh")
	t.Logf("fresh session greeting TimeZone %q", d.PgConn().ParameterStatus("TimeZone"))
}

// 5. Stale cancel: the former client's in-flight CancelRequest hits the next client.
func TestBreakStaleCancelRace(t *testing.T) {
	srv := needServer(t)
	svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), "serverPool: {maxIdle: 1, idleTimeout: 1m}")
	addr := brokerAddr(svc)
	// Warm the pool.
	w := rawDial(t, addr, nil)
	w.terminateClose()
	waitPool(t, svc, 1)
	hits := 0
	for i := 0; i < 40; i++ {
		a := rawDial(t, addr, nil)
		// Attacker: cancel with its own key, then leave cleanly at once.
		go func(pid uint32, key []byte) {
			cc, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			_, _ = cc.Write(encodeCancelRequest(pid, key))
			_, _ = io.Copy(io.Discard, cc)
			cc.Close()
		}(a.pid, a.key)
		time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
		a.terminateClose()
		// Victim takes the connection as soon as it is back.
		deadline := time.Now().Add(5 * time.Second)
		for svc.conn.pool.size() != 1 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Microsecond)
		}
		v := rawDial(t, addr, nil)
		seen := v.query(t, "select pg_sleep(0.05)")
		if strings.Contains(strings.Join(seen, " "), "57014") {
			hits++
			t.Logf("iteration %d: victim (pid %d, attacker pid %d) cancelled: %v", i, v.pid, a.pid, seen)
		}
		v.terminateClose()
		waitPool(t, svc, 1)
	}
	t.Logf("victim cancelled by the previous client's key in %d of 40 iterations", hits)
}

// 6. dblink connections and custom placeholders survive DISCARD ALL.
func TestBreakDblink(t *testing.T) {
	srv := needServer(t)
	srv.exec(t, "select 1")
	ctx := context.Background()
	root, err := pgx.Connect(ctx, strings.Replace(srv.rootDSN, "dbname=postgres", "dbname="+testDB, 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.Exec(ctx, "create extension if not exists dblink"); err != nil {
		t.Fatal(err)
	}
	root.Close(ctx)
	svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
	c1 := svc.connect(t, "")
	pid := backendPID(t, c1)
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s password=%s", srv.port, testDB, roleSCRAM.name, roleSCRAM.password)
	if _, err := c1.Exec(ctx, "select dblink_connect('victim_conn', $1)", conninfo); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Exec(ctx, "set myapp.tenant = 'tenant-42'"); err != nil {
		t.Fatal(err)
	}
	closeConn(t, c1)
	waitPool(t, svc, 1)
	c2 := svc.connect(t, "")
	if backendPID(t, c2) != pid {
		t.Fatal("not reused")
	}
	t.Logf("c2 dblink_get_connections: %s", queryString(t, c2, "select coalesce(dblink_get_connections()::text, 'none')"))
	t.Logf("c2 current_setting('myapp.tenant', true): %s", queryString(t, c2, "select coalesce(current_setting('myapp.tenant', true), '<null>')"))
	d := svc.connect(t, "application_name=fresh")
	t.Logf("fresh current_setting('myapp.tenant', true): %s", queryString(t, d, "select coalesce(current_setting('myapp.tenant', true), '<null>')"))
}

// 7. Pipelined query + Terminate + half-close, reading the answers.
func TestBreakPipelineThenTerminate(t *testing.T) {
	srv := needServer(t)
	for _, mode := range []string{"nopool", "pool"} {
		cfg := ""
		if mode == "pool" {
			cfg = poolConfig
		}
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), cfg)
		rc := rawDial(t, brokerAddr(svc), nil)
		q, _ := (&pgproto3.Query{String: "select pg_sleep(0.2), 'the-result'"}).Encode(nil)
		_, _ = rc.conn.Write(append(q, terminateMsg...))
		_ = rc.conn.(*net.TCPConn).CloseWrite()
		_ = rc.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(rc.conn)
		t.Logf("%s: client got %d bytes (contains result: %v), err %v", mode, len(b), strings.Contains(string(b), "the-result"), err)
		rc.conn.Close()
		time.Sleep(300 * time.Millisecond)
		for _, l := range svc.log.lines() {
			t.Log(l)
		}
	}
}

// 8. Client TLS + pool, SET ROLE, split Terminate, COPY interrupted, idle_session_timeout.
func TestBreakMisc(t *testing.T) {
	srv := needServer(t)
	ctx := context.Background()
	t.Run("client tls", func(t *testing.T) {
		cfg := fmt.Sprintf("tls:\n  cert: %s\n  key: %s\n%s", srv.pki.serverCertFile, srv.pki.serverKeyFile, poolConfig)
		svc := newService(t, baseCreds(srv, roleSCRAM, "require"), cfg)
		c1 := svc.connect(t, "sslmode=require")
		pid := backendPID(t, c1)
		closeConn(t, c1)
		waitPool(t, svc, 1)
		c2 := svc.connect(t, "sslmode=require")
		t.Logf("client tls: reused %v", backendPID(t, c2) == pid)
		closeConn(t, c2)
		waitPool(t, svc, 1)
	})
	t.Run("set role", func(t *testing.T) {
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c1 := svc.connect(t, "")
		pid := backendPID(t, c1)
		if _, err := c1.Exec(ctx, "set role pg_signal_backend"); err != nil {
			t.Fatal(err)
		}
		closeConn(t, c1)
		waitPool(t, svc, 1)
		c2 := svc.connect(t, "")
		t.Logf("set role: reused %v current_user %s", backendPID(t, c2) == pid, queryString(t, c2, "select current_user::text"))
	})
	t.Run("split terminate", func(t *testing.T) {
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		rc := rawDial(t, brokerAddr(svc), nil)
		rc.query(t, "select 1")
		_, _ = rc.conn.Write(terminateMsg[:2])
		time.Sleep(50 * time.Millisecond)
		_, _ = rc.conn.Write(terminateMsg[2:])
		_ = rc.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := rc.conn.Read(make([]byte, 10))
		t.Logf("split terminate: read %d %v; pool %d", n, err, poolSize(svc))
		rc.conn.Close()
	})
	t.Run("copy interrupted", func(t *testing.T) {
		svcD := newService(t, baseCreds(srv, roleSCRAM, "disable"), "")
		c0 := svcD.connect(t, "")
		if _, err := c0.Exec(ctx, "create table if not exists brk_c(a int); truncate brk_c"); err != nil {
			t.Fatal(err)
		}
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		rc := rawDial(t, brokerAddr(svc), nil)
		rc.fe.Send(&pgproto3.Query{String: "copy brk_c from stdin"})
		_ = rc.fe.Flush()
		rc.until(t, func(m pgproto3.BackendMessage) bool { _, ok := m.(*pgproto3.CopyInResponse); return ok })
		rc.fe.Send(&pgproto3.CopyData{Data: []byte("1\n2\n")})
		_ = rc.fe.Flush()
		rc.terminateClose()
		time.Sleep(300 * time.Millisecond)
		t.Logf("copy interrupted: rows %s pool %d", queryString(t, c0, "select count(*)::text from brk_c"), poolSize(svc))
	})
	t.Run("idle_session_timeout", func(t *testing.T) {
		svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), poolConfig)
		c1 := svc.connect(t, "options='-c idle_session_timeout=300'")
		pid := backendPID(t, c1)
		closeConn(t, c1)
		waitPool(t, svc, 1)
		time.Sleep(600 * time.Millisecond)
		c2 := svc.connect(t, "options='-c idle_session_timeout=300'")
		t.Logf("idle_session_timeout: reused %v, query %s", backendPID(t, c2) == pid, queryString(t, c2, "select 'ok'"))
	})
	t.Run("password changed in the database", func(t *testing.T) {
		svc := newService(t, baseCreds(srv, roleRotate, "disable"), poolConfig)
		c1 := svc.connect(t, "")
		closeConn(t, c1)
		waitPool(t, svc, 1)
		srv.exec(t, "alter role "+roleRotate.name+" password 'revoked-Secret-99'")
		defer srv.exec(t, "alter role "+roleRotate.name+" password '"+roleRotate.password+"'")
		for i := 0; i < 3; i++ {
			c, err := pgx.Connect(ctx, svc.dsn(""))
			if err != nil {
				t.Logf("revoked: client %d refused: %v", i, err)
				continue
			}
			t.Logf("revoked: client %d connected with the revoked password, user %s", i, queryString(t, c, "select current_user::text"))
			c.Close(ctx)
			waitPool(t, svc, 1)
		}
	})
}
