package pg

// Server connection reuse (config serverPool, off by default). Opening a
// PostgreSQL session costs the server a new backend process, which bounds
// how fast any proxy that opens one per client can accept short
// connections. With serverPool set, a session whose client ended it
// cleanly (a Terminate while the server was idle outside a transaction)
// is reset with DISCARD ALL and kept; the next client whose startup
// parameters and credentials are identical gets it instead of a new
// backend. The client sees the same greeting as from a new session
// (AuthenticationOk, the current ParameterStatus values, BackendKeyData,
// ReadyForQuery) and a session state that DISCARD ALL has reset: no
// prepared statements, cursors, temporary tables, LISTENs, advisory locks
// or SET values survive. What does survive is the backend itself
// (pg_backend_pid(), backend_start).

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// replicationParam reports whether the startup parameters ask for a
// replication connection (replication=true, on, yes, 1 or database).
func replicationParam(params []param) bool {
	for _, p := range params {
		if strings.EqualFold(p.key, "replication") {
			switch strings.ToLower(p.value) {
			case "false", "off", "no", "0":
			default:
				return true
			}
		}
	}
	return false
}

// resetTimeout bounds the DISCARD ALL that prepares a connection for reuse.
const resetTimeout = 5 * time.Second

// poolKey identifies what a reused connection must match: an HMAC, under a
// per-process random key, of every credential and of the protocol version
// and startup parameters sent to the server (in sorted order: clients such
// as pgx send them in random order). A rotated password (or any other changed credential or
// startup parameter) gives a different key, so it is never served a
// connection authenticated with the old one.
type poolKey [sha256.Size]byte

// idleConn is an authenticated, reset server connection and what a client
// must be told about it.
type idleConn struct {
	key     poolKey
	conn    net.Conn
	tls     bool
	auth    string
	keyData *pgproto3.BackendKeyData
	npv     []byte  // the server's NegotiateProtocolVersion, if it sent one
	params  []param // current ParameterStatus values, in the server's order
	timer   *time.Timer
	born    time.Time // when the server session started
	since   time.Time // when it was last put in the pool
	forward []byte    // the greeting for the current client (set by prepare)
	// privileged: what the last reset found the role allowed to do (set up
	// a replication origin, start a backup), so that the next reset checks
	// for it in the same round trip.
	privileged leftoverChecks
}

// leftoverChecks says which privileged session state a reset looks for.
type leftoverChecks struct{ origin, backup bool }

// sql is a DO block that fails if a replication origin is set up for the
// session and stops a backup the session started (55000: none is
// running), or "" when neither is checked.
func (lc leftoverChecks) sql() string {
	if !lc.origin && !lc.backup {
		return ""
	}
	var b strings.Builder
	b.WriteString("DO $$BEGIN ")
	if lc.origin {
		b.WriteString("IF pg_catalog.pg_replication_origin_session_is_setup() THEN RAISE EXCEPTION 'a replication origin is set up for the session'; END IF; ")
	}
	if lc.backup {
		b.WriteString("BEGIN PERFORM pg_catalog.pg_backup_stop(false); EXCEPTION WHEN object_not_in_prerequisite_state THEN NULL; END; ")
	}
	b.WriteString("END$$")
	return b.String()
}

// prepare fills ic for a session: from a new session's startup messages
// (with the client's own cancel key put in), or, for a reused connection,
// by building the greeting from what ic knows.
func (ic *idleConn) prepare(up *upstream, clientKey *pgproto3.BackendKeyData) error {
	if ic.conn != nil {
		var err error
		ic.forward, err = ic.greeting(clientKey)
		return err
	}
	npv, params, err := greetingState(up.forward)
	if err != nil {
		return err
	}
	ic.conn, ic.tls, ic.auth, ic.keyData, ic.npv, ic.params = up.conn, up.tls, up.auth, up.keyData, npv, params
	ic.born = time.Now()
	ic.forward = up.forward
	if clientKey != nil {
		ic.forward, err = replaceKeyData(up.forward, clientKey)
	}
	return err
}

// serverPool keeps idle server connections of one service.
type serverPool struct {
	maxIdle     int
	idleTimeout time.Duration
	maxLifetime time.Duration
	hmacKey     [32]byte
	logger      interface{ Debugf(string, ...any) }

	mu     sync.Mutex
	idle   map[poolKey][]*idleConn
	n      int
	closed bool           // closeAll was called: nothing is kept any more
	resets sync.WaitGroup // resets in flight, which closeAll waits for
}

func newServerPool(maxIdle int, idleTimeout, maxLifetime time.Duration, logger interface{ Debugf(string, ...any) }) *serverPool {
	p := &serverPool{maxIdle: maxIdle, idleTimeout: idleTimeout, maxLifetime: maxLifetime, logger: logger, idle: make(map[poolKey][]*idleConn)}
	if _, err := rand.Read(p.hmacKey[:]); err != nil {
		panic("pg: no randomness for the pool key: " + err.Error())
	}
	return p
}

// key computes the pool key of a session.
func (p *serverPool) key(creds connector.CredentialValuesByID, version uint32, params []param) poolKey {
	m := hmac.New(sha256.New, p.hmacKey[:])
	ids := make([]string, 0, len(creds))
	for id := range creds {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		m.Write(n[:])
		m.Write(b)
	}
	for _, id := range ids {
		field([]byte(id))
		field(creds[id])
	}
	binary.BigEndian.PutUint64(n[:], uint64(version))
	m.Write(n[:])
	sorted := append([]param(nil), params...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].key < sorted[j].key })
	for _, prm := range sorted {
		field([]byte(prm.key))
		field([]byte(prm.value))
	}
	var k poolKey
	m.Sum(k[:0])
	return k
}

// get takes an idle connection for key that is still open, or returns nil.
func (p *serverPool) get(key poolKey) *idleConn {
	for {
		p.mu.Lock()
		list := p.idle[key]
		if len(list) == 0 {
			p.mu.Unlock()
			return nil
		}
		ic := list[len(list)-1]
		list[len(list)-1] = nil
		if len(list) == 1 {
			delete(p.idle, key)
		} else {
			p.idle[key] = list[:len(list)-1]
		}
		p.n--
		p.mu.Unlock()
		ic.timer.Stop()
		if time.Since(ic.born) > p.maxLifetime {
			p.logger.Debugf("pg: closing a server connection older than serverPool.maxLifetime")
			ic.terminate()
			continue
		}
		if err := checkIdle(ic.conn); err != nil {
			p.logger.Debugf("pg: dropping an idle server connection: %v", err)
			_ = ic.conn.Close()
			continue
		}
		return ic
	}
}

// startReset runs reset for a connection its client has just left, then
// keeps it; closeAll waits for resets in flight. Once the pool is closed
// the connection is ended at once instead.
func (p *serverPool) startReset(ic *idleConn, reset func() error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		ic.terminate()
		return
	}
	p.resets.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.resets.Done()
		if err := reset(); err != nil {
			p.logger.Debugf("pg: not reusing a server connection: %v", err)
			ic.terminate()
			return
		}
		p.put(ic)
	}()
}

// put keeps ic, until idleTimeout or its maxLifetime, whichever comes
// first. A full pool makes room by ending its longest-idle connection: the
// one just used is the likelier to be wanted again. A closed pool keeps
// nothing.
func (p *serverPool) put(ic *idleConn) {
	age := time.Since(ic.born)
	p.mu.Lock()
	if p.closed || age >= p.maxLifetime {
		p.mu.Unlock()
		ic.terminate()
		return
	}
	var evicted *idleConn
	if p.n >= p.maxIdle {
		if evicted = p.takeOldestLocked(); evicted == nil {
			p.mu.Unlock()
			ic.terminate()
			return
		}
	}
	ic.since = time.Now()
	p.idle[ic.key] = append(p.idle[ic.key], ic)
	p.n++
	ic.timer = time.AfterFunc(min(p.idleTimeout, p.maxLifetime-age), func() {
		if p.remove(ic) {
			ic.terminate()
		}
	})
	p.mu.Unlock()
	if evicted != nil {
		p.logger.Debugf("pg: serverPool is full: ending its longest-idle server connection")
		evicted.terminate()
	}
}

// takeOldestLocked removes the longest-idle connection, of any key, and
// returns it (nil when the pool is empty). p.mu must be held.
func (p *serverPool) takeOldestLocked() *idleConn {
	var oldest *idleConn
	for _, list := range p.idle {
		for _, c := range list {
			if oldest == nil || c.since.Before(oldest.since) {
				oldest = c
			}
		}
	}
	if oldest == nil {
		return nil
	}
	oldest.timer.Stop()
	p.removeLocked(oldest)
	return oldest
}

// giveBack ends the longest-idle connection and waits, until deadline, for
// the server to close it, which frees its connection slot. It reports
// whether there was one to end: a server that refused a new session with
// 53300 may then accept it.
func (p *serverPool) giveBack(deadline time.Time) bool {
	p.mu.Lock()
	ic := p.takeOldestLocked()
	p.mu.Unlock()
	if ic == nil {
		return false
	}
	_ = ic.conn.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
	_, _ = ic.conn.Write(terminateMsg)
	// The backend closes the socket as its process exits, after it has
	// given up its slot.
	_ = ic.conn.SetReadDeadline(deadline)
	var buf [512]byte
	for {
		if _, err := ic.conn.Read(buf[:]); err != nil {
			break
		}
	}
	_ = ic.conn.Close()
	return true
}

// remove takes ic out of the pool; it reports whether ic was there.
func (p *serverPool) remove(ic *idleConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.removeLocked(ic)
}

// removeLocked takes ic out of the pool, reporting whether it was there.
// p.mu must be held.
func (p *serverPool) removeLocked(ic *idleConn) bool {
	list := p.idle[ic.key]
	for i, c := range list {
		if c == ic {
			list = append(list[:i], list[i+1:]...)
			if len(list) == 0 {
				delete(p.idle, ic.key)
			} else {
				p.idle[ic.key] = list
			}
			p.n--
			return true
		}
	}
	return false
}

// terminate ends an idle session as a client would: with a Terminate (so
// the server does not log an unexpected EOF), then closes the connection.
func (ic *idleConn) terminate() {
	_ = ic.conn.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
	_, _ = ic.conn.Write(terminateMsg)
	_ = ic.conn.Close()
}

// closeAll ends every idle connection, and those whose reset was in flight
// once it is done, each with a Terminate; the pool keeps nothing after.
func (p *serverPool) closeAll() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.resets.Wait() // each bounded by resetTimeout; put ends them
	p.mu.Lock()
	idle := p.idle
	p.idle, p.n = make(map[poolKey][]*idleConn), 0
	p.mu.Unlock()
	for _, list := range idle {
		for _, ic := range list {
			ic.timer.Stop()
			ic.terminate()
		}
	}
}

// size is the number of idle connections.
func (p *serverPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// errServerSpoke: an idle server connection had something to read (a
// FATAL before the server closed it, for example), so it is not idle.
var errServerSpoke = errors.New("the server sent data on an idle connection")

// checkIdle peeks, without blocking, at the socket under conn: an idle
// session has nothing to read. EOF, an error or any data means the server
// ended or changed the session while it was idle.
func checkIdle(conn net.Conn) error {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var (
		n     int
		errno error
		buf   [1]byte
	)
	if err := rc.Read(func(fd uintptr) bool {
		n, _, errno = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		return err
	}
	switch {
	case errno == syscall.EAGAIN:
		return nil
	case errno != nil:
		return errno
	case n == 0:
		return errors.New("the server closed the connection")
	default:
		return errServerSpoke
	}
}

// greeting builds what a client is sent when it gets ic: the same
// messages a new session starts with.
func (ic *idleConn) greeting(clientKey *pgproto3.BackendKeyData) ([]byte, error) {
	out := append([]byte(nil), ic.npv...)
	var err error
	if out, err = (&pgproto3.AuthenticationOk{}).Encode(out); err != nil {
		return nil, err
	}
	for _, p := range ic.params {
		if out, err = (&pgproto3.ParameterStatus{Name: p.key, Value: p.value}).Encode(out); err != nil {
			return nil, err
		}
	}
	if clientKey != nil {
		if out, err = clientKey.Encode(out); err != nil {
			return nil, err
		}
	}
	return (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(out)
}

// greetingState collects, from a new session's startup messages, what a
// later client of the same connection must be told.
func greetingState(forward []byte) (npv []byte, params []param, err error) {
	rd := newServerReader(bytes.NewReader(forward))
	for {
		typ, body, raw, err := rd.next()
		if err != nil {
			return nil, nil, fmt.Errorf("startup messages: %w", err)
		}
		switch typ {
		case 'v':
			npv = bytes.Clone(raw)
		case 'S':
			var m pgproto3.ParameterStatus
			if err := m.Decode(body); err != nil {
				return nil, nil, err
			}
			params = setParam(params, m.Name, m.Value)
		case 'Z':
			return npv, params, nil
		}
	}
}

// setParam sets name to value in params, keeping the order of first
// appearance.
func setParam(params []param, name, value string) []param {
	for i := range params {
		if params[i].key == name {
			params[i].value = value
			return params
		}
	}
	return append(params, param{name, value})
}

// clientKeyData returns the key data handed to the client of a pooled
// connection: the real process id (it shows in pg_backend_pid() and
// notifications) with a fresh random secret, so that a former client of the
// same backend cannot cancel a later client's queries.
func clientKeyData(real *pgproto3.BackendKeyData) *pgproto3.BackendKeyData {
	secret := make([]byte, len(real.SecretKey))
	if _, err := rand.Read(secret); err != nil {
		panic("pg: no randomness for a cancel key: " + err.Error())
	}
	return &pgproto3.BackendKeyData{ProcessID: real.ProcessID, SecretKey: secret}
}

// replaceKeyData rewrites the BackendKeyData message in a session's
// startup messages.
func replaceKeyData(forward []byte, k *pgproto3.BackendKeyData) ([]byte, error) {
	rd := newServerReader(bytes.NewReader(forward))
	var out []byte
	for {
		typ, _, raw, err := rd.next()
		if err != nil {
			return nil, fmt.Errorf("startup messages: %w", err)
		}
		if typ == 'K' {
			if out, err = k.Encode(out); err != nil {
				return nil, err
			}
		} else {
			out = append(out, raw...)
		}
		if typ == 'Z' {
			return out, nil
		}
	}
}

// reset prepares a connection for its next client: DISCARD ALL, then a
// query for the current value of every reported setting the greeting will
// announce. The values a session's ParameterStatus messages carried went
// to its client, not to us, and some change without the session doing
// anything (TimeZone after ALTER SYSTEM and a reload, in_hot_standby after
// a promotion), so they are asked for rather than remembered.
//
// The same query looks for session state that DISCARD ALL leaves behind
// and that a session's end would clear: a replication slot the backend
// holds (a temporary one, made with pg_create_*_replication_slot), and,
// for roles allowed to call the functions, a replication origin set up for
// the session (then the connection is not reused) and a backup started
// with pg_backup_start (stopped here, as the end of the session would
// abort it).
func (ic *idleConn) reset() error {
	_ = ic.conn.SetDeadline(time.Now().Add(resetTimeout))
	out, err := (&pgproto3.Query{String: "DISCARD ALL"}).Encode(nil)
	if err != nil {
		return err
	}
	var sel strings.Builder
	sel.WriteString("SELECT ")
	for _, p := range ic.params {
		sel.WriteString("pg_catalog.current_setting('" + strings.ReplaceAll(p.key, "'", "''") + "', true), ")
	}
	sel.WriteString(leftoverProbe)
	// DISCARD ALL keeps the random() generator's state: a client that
	// called setseed would know what the next client's random() returns.
	sel.WriteString(", pg_catalog.setseed(" + randomSeed() + ")")
	if out, err = (&pgproto3.Query{String: sel.String()}).Encode(out); err != nil {
		return err
	}
	sent := ic.privileged
	if q := sent.sql(); q != "" {
		if out, err = (&pgproto3.Query{String: q}).Encode(out); err != nil {
			return err
		}
	}
	if _, err := ic.conn.Write(out); err != nil {
		return err
	}
	rd := newServerReader(ic.conn)
	if _, err := ic.simpleQueryResult(rd); err != nil { // DISCARD ALL
		return err
	}
	row, err := ic.simpleQueryResult(rd)
	if err != nil {
		return err
	}
	if len(row) != len(ic.params)+4 {
		return fmt.Errorf("%d values for %d settings, 3 checks and a seed", len(row), len(ic.params))
	}
	for i := range ic.params {
		if row[i] != nil {
			ic.params[i].value = string(row[i])
		}
	}
	checks := row[len(ic.params):]
	if string(checks[0]) == "t" {
		return errors.New("the session holds a replication slot")
	}
	if sent.sql() != "" {
		if _, err := ic.simpleQueryResult(rd); err != nil {
			return err
		}
	}
	// The role's privileges may have grown since the last reset: check
	// now what was not checked above.
	ic.privileged = leftoverChecks{origin: string(checks[1]) == "t", backup: string(checks[2]) == "t"}
	if q := (leftoverChecks{origin: ic.privileged.origin && !sent.origin, backup: ic.privileged.backup && !sent.backup}).sql(); q != "" {
		if _, err := ic.query(rd, q); err != nil {
			return err
		}
	}
	if rd.r.Buffered() > 0 {
		return errors.New("unexpected data after the reset")
	}
	return ic.conn.SetDeadline(time.Time{})
}

// randomSeed returns a random setseed argument in [-1, 1].
func randomSeed() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	v := float64(binary.BigEndian.Uint64(b[:])>>11)/float64(1<<53)*2 - 1
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// leftoverProbe ends the reset's SELECT: does the backend hold a
// replication slot, and may the role set up a replication origin or start
// a backup (only then are those looked at: the functions are for superusers
// unless granted, and their names vary between server versions).
const leftoverProbe = "EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE active_pid = pg_catalog.pg_backend_pid()), " +
	"COALESCE(pg_catalog.has_function_privilege(pg_catalog.to_regprocedure('pg_catalog.pg_replication_origin_session_is_setup()'), 'EXECUTE'), false), " +
	"COALESCE(pg_catalog.has_function_privilege(pg_catalog.to_regprocedure('pg_catalog.pg_backup_stop(boolean)'), 'EXECUTE'), false)"

// query sends one simple query and returns its first row.
func (ic *idleConn) query(rd *serverReader, sql string) ([][]byte, error) {
	out, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return nil, err
	}
	if _, err := ic.conn.Write(out); err != nil {
		return nil, err
	}
	return ic.simpleQueryResult(rd)
}

// simpleQueryResult reads the answer to one simple query up to its
// ReadyForQuery, which must say idle, and returns the first row's values.
// ParameterStatus messages update the greeting's settings.
func (ic *idleConn) simpleQueryResult(rd *serverReader) ([][]byte, error) {
	var row [][]byte
	for {
		typ, body, _, err := rd.next()
		if err != nil {
			return nil, err
		}
		switch typ {
		case 'C', 'N', 'T':
		case 'S':
			var m pgproto3.ParameterStatus
			if err := m.Decode(body); err != nil {
				return nil, err
			}
			ic.params = setParam(ic.params, m.Name, m.Value)
		case 'D':
			var m pgproto3.DataRow
			if err := m.Decode(body); err != nil {
				return nil, err
			}
			if row == nil {
				row = make([][]byte, len(m.Values))
				for i, v := range m.Values {
					if v != nil {
						row[i] = bytes.Clone(v)
					}
				}
			}
		case 'E':
			var m pgproto3.ErrorResponse
			_ = m.Decode(body)
			return nil, fmt.Errorf("the reset query failed: %s %s", m.Code, m.Message)
		case 'Z':
			if len(body) != 1 || body[0] != 'I' {
				return nil, fmt.Errorf("not idle after the reset (status %q)", body)
			}
			return row, nil
		default:
			return nil, fmt.Errorf("unexpected message %q during the reset", typ)
		}
	}
}
