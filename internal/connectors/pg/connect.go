package pg

// The connection state machine: client-facing startup (encryption requests,
// direct TLS, CancelRequest, StartupMessage), then the server-facing
// startup (TLS per sslmode, authentication), then the hand-over to the
// relay. Wire encoding and decoding is in codec.go.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/secretless-broker/secretless-broker/internal/relay"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

const (
	// errorWriteTimeout bounds the writing of a final ErrorResponse.
	errorWriteTimeout = time.Second
	// reportMargin is how long before the broker's handshake deadline a
	// session gives up, to leave time for its ErrorResponse (a quarter of
	// the time left, when that is shorter).
	reportMargin = 250 * time.Millisecond
	// maxStartupForward bounds what the server may send before
	// ReadyForQuery (ParameterStatus, notices ...), which is buffered.
	maxStartupForward = 4 << 20
)

// session is the state of one Connect call.
type session struct {
	c        *pgConnector
	raw      net.Conn    // the client's socket, as accepted
	client   net.Conn    // raw, or the TLS connection on top of it
	sw       *switchConn // transport under client when it is TLS
	deadline time.Time
	password []byte   // aliases the credential, for scrubbing messages
	public   [][]byte // the user and database names, which may hold it
}

// Connect implements tcp.Connector.
func (c *pgConnector) Connect(clientConn net.Conn, creds connector.CredentialValuesByID) (net.Conn, error) {
	s := &session{
		c:        c,
		raw:      clientConn,
		client:   clientConn,
		deadline: c.handshakeDeadline(clientConn),
		password: creds[credPassword],
	}
	_ = clientConn.SetDeadline(s.deadline)
	conn, err := s.run(creds)
	if err != nil {
		s.reportToClient(err)
		return nil, s.scrub(err)
	}
	return conn, nil
}

// handshakeDeadline is when a session started now must be done: after the
// connector's handshakeTimeout, and early enough before the broker's own
// deadline (tcp.HandshakeDeadline, when it closes the client) that the
// client still gets the ErrorResponse saying why.
func (c *pgConnector) handshakeDeadline(clientConn net.Conn) time.Time {
	now := time.Now()
	d := now.Add(c.cfg.handshakeTimeout)
	if b, ok := tcp.HandshakeDeadline(clientConn); ok {
		margin := min(reportMargin, b.Sub(now)/4)
		if b = b.Add(-margin); b.Before(d) {
			d = b
		}
	}
	return d
}

// run performs the whole startup and returns the connection to relay.
func (s *session) run(creds connector.CredentialValuesByID) (net.Conn, error) {
	pkt, err := s.readClientStartup()
	if err != nil {
		return nil, err
	}
	if pkt.kind == kindCancelRequest {
		return s.cancel(pkt), nil
	}
	if s.c.cfgErr != nil {
		return nil, newError(ErrConfig, codeUnableToConnect, "the broker's configuration of this service is invalid", s.c.cfgErr)
	}
	if pkt.major() != 3 {
		return nil, newError(ErrClientProtocol, codeFeatureNotSupported,
			fmt.Sprintf(unsupportedProtocolFormat, pkt.major(), pkt.minor()), nil)
	}
	if s.c.cfg.requireTLS && s.sw == nil {
		return nil, newError(ErrClientTLSRequired, codeInvalidAuthSpec,
			"this service accepts only TLS connections: connect with sslmode=require", nil)
	}
	t, err := parseCredentials(creds)
	if err != nil {
		return nil, newError(ErrConfig, codeUnableToConnect, "the broker's credentials for this service are incomplete or invalid", err)
	}
	params := startupParams(pkt.params, t)
	for _, p := range params {
		if p.key == "user" || p.key == "database" {
			s.public = append(s.public, []byte(p.value))
		}
	}
	startup, err := encodeStartup(pkt.version, params)
	if err != nil {
		return nil, newError(ErrClientProtocol, codeProtocolViolation, "invalid startup parameter", err)
	}
	var (
		pooled *idleConn // set when the server connection may be reused
		up     *upstream
	)
	// A walsender's state (temporary slots ...) survives DISCARD ALL, so
	// replication sessions are never pooled.
	if pool := s.c.pool; pool != nil && !replicationParam(params) {
		key := pool.key(creds, pkt.version, params)
		if ic := pool.get(key); ic != nil {
			pooled = ic
			up = &upstream{conn: ic.conn, rd: newServerReader(ic.conn), keyData: ic.keyData, tls: ic.tls, auth: ic.auth + " (reused connection)"}
		} else {
			pooled = &idleConn{key: key}
		}
	}
	if up == nil {
		up, err = s.connectServer(t, startup)
		// A server that is full (53300) while this service holds idle
		// sessions gets one of them back, and a second try.
		if err != nil && s.c.pool != nil && isTooManyConnections(err) && s.c.pool.giveBack(s.deadline) {
			s.c.logger.Debugf("pg: the server has no connection slot left: ended an idle pooled server connection and trying again")
			up, err = s.connectServer(t, startup)
		}
		if err != nil {
			return nil, err
		}
	}
	// Register the cancel key before the client can learn it.
	tc := &targetConn{Conn: up.conn, pending: up.rd.buffered()}
	clientKey := up.keyData
	if pooled != nil && up.keyData != nil {
		clientKey = clientKeyData(up.keyData)
	}
	var ct *cancelTarget
	if up.keyData != nil {
		ct = &cancelTarget{network: t.network, addr: t.addr}
		if up.tls {
			ct.tlsConf = cancelTLSConfig(t.tlsConf)
		}
		if pooled != nil {
			ct.secret = up.keyData.SecretKey
		}
		tc.onClose = s.c.cancels.add(clientKey.ProcessID, clientKey.SecretKey, ct)
	}
	var conn net.Conn = tc
	if pooled != nil {
		if err := pooled.prepare(up, clientKey); err != nil {
			_ = tc.Close()
			return nil, newError(ErrTargetProtocol, codeConnectionFailure, "the PostgreSQL server broke the protocol during the startup", err)
		}
		up.forward = pooled.forward
		conn = &pooledConn{targetConn: tc, pool: s.c.pool, ic: pooled, status: 'I', cancels: s.c.cancels, cancel: ct}
	}
	// TLS to the client: the broker relays the raw socket to one end of a
	// socket pair, and we relay the decrypted stream from the other end.
	// The pair is made before the client hears that it is logged in.
	var inner, outer net.Conn
	if s.sw != nil {
		if inner, outer, err = streamPair(); err != nil {
			_ = conn.Close()
			return nil, newError(ErrClientTLS, codeUnableToConnect, "cannot relay the client's TLS session", err)
		}
	}
	if _, err := s.client.Write(up.forward); err != nil {
		_ = conn.Close()
		if inner != nil {
			_ = inner.Close()
			_ = outer.Close()
		}
		return nil, newError(ErrClientProtocol, "", "client went away during the startup", err)
	}
	if s.c.logger.DebugEnabled() {
		s.c.logger.Debugf("pg: session for %s: server %s as %q, auth %s, tls %v, client tls %v",
			s.raw.RemoteAddr(), t.addr, t.username, up.auth, up.tls, s.sw != nil)
	}

	if s.c.sessionHook != nil {
		s.c.sessionHook(sessionInfo{user: t.username, auth: up.auth, tls: up.tls, clientTLS: s.sw != nil, params: pkt.params})
	}
	_ = up.conn.SetDeadline(time.Time{})
	_ = s.raw.SetDeadline(time.Time{})
	if s.sw == nil {
		return conn, nil
	}
	s.sw.switchTo(inner)
	go relay.Pipe(&tlsClient{Conn: s.client.(*tls.Conn), transport: inner}, innerServer{conn})
	return &pairEnd{outer}, nil
}

// innerServer is the server connection as the TLS client's relay sees it.
// The server's EOF does not end that relay at once: it sends close_notify
// and half-closes the socket pair, the broker's relay then ends the session
// on pairEnd's EOF and closes the pair's other end, and this relay ends on
// that. Closing the pair here first, with the client's last TLS records
// still unread in it, would reset the pair under the broker's relay
// (broken pipe in the log of a session that ended normally).
type innerServer struct{ net.Conn }

func (c innerServer) EndsSessionAtEOF() bool { return false }
func (c innerServer) RelayConn() net.Conn {
	if u, ok := c.Conn.(relay.Unwrapper); ok {
		return u.RelayConn()
	}
	return nil
}
func (c innerServer) CloseWrite() error { return closeWrite(c.Conn) }

// pairEnd is the broker's end of the socket pair that carries a TLS
// client's decrypted session: like the server connection behind it, its EOF
// ends the session (tcp.SessionEnder), and the relay uses its socket.
type pairEnd struct{ net.Conn }

func (c *pairEnd) EndsSessionAtEOF() bool { return true }
func (c *pairEnd) RelayConn() net.Conn    { return c.Conn }
func (c *pairEnd) CloseWrite() error      { return closeWrite(c.Conn) }

// tlsClient is the client's TLS session as its relay sees it: when the
// server's side ends, CloseWrite sends close_notify and then half-closes
// the socket pair under the session, so the broker passes a FIN on to the
// client, as a server's own TLS session end would.
type tlsClient struct {
	*tls.Conn
	transport net.Conn
}

func (c *tlsClient) CloseWrite() error {
	err := c.Conn.CloseWrite()
	if cw, ok := c.transport.(closeWriter); ok {
		if cerr := cw.CloseWrite(); err == nil {
			err = cerr
		}
	}
	return err
}

// startupParams builds the parameters sent to the server: the client's,
// minus user (from the credentials), with database from the credentials
// when set, the client's otherwise, and the user name when neither is set
// (the server's own default), plus every extra credential (which wins over
// the client's value of the same name).
func startupParams(client []param, t *target) []param {
	out := make([]param, 0, len(client)+len(t.extra)+2)
	out = append(out, param{"user", t.username})
	db := t.database
	// Setting names are case-insensitive in the server, and the encoder
	// does not keep an order, so a credential overrides any spelling.
	overridden := map[string]bool{}
	for _, p := range t.extra {
		overridden[strings.ToLower(p.key)] = true
	}
	clientDB := ""
	for _, p := range client {
		switch {
		case p.key == "database":
			clientDB = p.value // the server too takes the last of duplicates
		case p.key == "user" || overridden[strings.ToLower(p.key)]:
		default:
			out = append(out, p)
		}
	}
	if db == "" {
		db = clientDB
	}
	if db == "" {
		db = t.username
	}
	out = append(out, param{"database", db})
	return append(out, t.extra...)
}

// readClientStartup reads the client's packets up to its StartupMessage or
// CancelRequest, answering SSLRequest and GSSENCRequest on the way.
func (s *session) readClientStartup() (*startupPacket, error) {
	var sslAnswered, gssAnswered bool
	for first := true; ; first = false {
		var hdr [4]byte
		if _, err := io.ReadFull(s.client, hdr[:]); err != nil {
			msg := "no startup packet from the client"
			switch {
			case errors.Is(err, io.EOF) && sslAnswered && s.c.cfg.clientTLS == nil:
				// libpq with sslmode=require (or verify-*) after our 'N'.
				return nil, newError(ErrClientTLSRequired, "",
					"the client asked for TLS, which this service does not offer (set config.tls to offer it), and went away", nil)
			case errors.Is(err, io.EOF):
				msg = "the client closed the connection before sending a startup packet"
			}
			return nil, newError(ErrClientProtocol, "", msg, err)
		}
		if first && isTLSClientHello(hdr[:]) {
			if err := s.directTLS(hdr[:]); err != nil {
				return nil, err
			}
			sslAnswered = true
			continue
		}
		pkt, err := readStartupPacket(s.client, hdr[:])
		if err != nil {
			switch {
			case errors.Is(err, errBadLength):
				return nil, newError(ErrClientProtocol, codeProtocolViolation, "invalid length of startup packet", err)
			case isTimeout(err):
				return nil, newError(ErrClientProtocol, codeProtocolViolation, "timeout: the client did not send its whole startup packet in time", err)
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				return nil, newError(ErrClientProtocol, "", "incomplete startup packet", err) // nobody to tell
			}
			return nil, newError(ErrClientProtocol, codeProtocolViolation, "invalid startup packet", err)
		}
		switch pkt.kind {
		case kindSSLRequest, kindGSSEncRequest:
			if s.sw != nil || (pkt.kind == kindSSLRequest && sslAnswered) || (pkt.kind == kindGSSEncRequest && gssAnswered) {
				return nil, newError(ErrClientProtocol, codeProtocolViolation, "unexpected encryption request", nil)
			}
			if hasPendingData(s.raw) {
				msg := "received unencrypted data after SSL request" // the server's words
				if pkt.kind == kindGSSEncRequest {
					msg = "received unencrypted data after GSSAPI encryption request"
				}
				return nil, newError(ErrClientProtocol, codeProtocolViolation, msg, errors.New("possible man-in-the-middle attack"))
			}
			if pkt.kind == kindGSSEncRequest {
				gssAnswered = true
				if _, err := s.raw.Write([]byte{'N'}); err != nil {
					return nil, newError(ErrClientProtocol, "", "client went away", err)
				}
				continue
			}
			sslAnswered = true
			if s.c.cfg.clientTLS == nil {
				if _, err := s.raw.Write([]byte{'N'}); err != nil {
					return nil, newError(ErrClientProtocol, "", "client went away", err)
				}
				continue
			}
			if _, err := s.raw.Write([]byte{'S'}); err != nil {
				return nil, newError(ErrClientProtocol, "", "client went away", err)
			}
			if err := s.startClientTLS(nil, false); err != nil {
				return nil, err
			}
		case kindUnknownRequest:
			return nil, newError(ErrClientProtocol, codeFeatureNotSupported,
				fmt.Sprintf(unsupportedProtocolFormat, pkt.major(), pkt.minor()), nil)
		default:
			return pkt, nil
		}
	}
}

// directTLS handles a client that starts with a TLS ClientHello
// (PostgreSQL 17's sslnegotiation=direct). hdr holds the bytes already read.
func (s *session) directTLS(hdr []byte) error {
	if s.c.cfg.clientTLS == nil {
		_, _ = s.raw.Write(tlsAlertHandshakeFailure)
		return newError(ErrClientTLS, "", "direct TLS connection refused: this service does not offer TLS to clients", nil)
	}
	return s.startClientTLS(bytes.Clone(hdr), true)
}

// startClientTLS runs the client-facing TLS handshake.
func (s *session) startClientTLS(prefix []byte, direct bool) error {
	s.sw = &switchConn{Conn: s.raw, prefix: prefix}
	tc := tls.Server(s.sw, s.c.cfg.clientTLS)
	if err := tc.Handshake(); err != nil {
		s.sw = nil
		return newError(ErrClientTLS, "", "TLS handshake with the client failed", err)
	}
	s.client = tc
	if direct && tc.ConnectionState().NegotiatedProtocol != alpnPostgres {
		return newError(ErrClientTLS, codeProtocolViolation,
			"direct SSL connection was established without ALPN protocol negotiation extension", nil)
	}
	return nil
}

// cancel forwards a CancelRequest to the server of the session it names.
func (s *session) cancel(pkt *startupPacket) net.Conn {
	done := finishedConn{local: s.raw.LocalAddr(), remote: noteAddr("cancel request, unknown key")}
	t := s.c.cancels.lookup(pkt.cancel.ProcessID, pkt.cancel.SecretKey)
	if t != nil {
		done.remote = noteAddr("cancel request for " + t.addr)
	}
	if t == nil {
		s.c.logger.Debugf("pg: cancel request from %s for process %d: %v", s.raw.RemoteAddr(), pkt.cancel.ProcessID, errCancelUnknownKey)
		return done
	}
	raw := pkt.raw
	if t.secret != nil {
		raw = encodeCancelRequest(pkt.cancel.ProcessID, t.secret)
	}
	if err := forwardCancel(t, raw, s.c.cfg.connectTimeout); err != nil {
		s.c.logger.Warnf("pg: forwarding cancel request for process %d to %s: %v", pkt.cancel.ProcessID, t.addr, err)
		return done
	}
	s.c.logger.Debugf("pg: forwarded cancel request for process %d to %s", pkt.cancel.ProcessID, t.addr)
	return done
}

// reportToClient sends the failure to the client as one ErrorResponse.
func (s *session) reportToClient(err error) {
	var ce *connError
	if !errors.As(err, &ce) || (ce.code == "" && ce.raw == nil) {
		return
	}
	msg := ce.raw
	if msg == nil || s.containsPassword(msg) {
		text := clientMessagePrefix + ce.msg
		detail := ce.detail
		if s.containsPassword([]byte(text)) || s.containsPassword([]byte(detail)) {
			text, detail = clientMessagePrefix+"connection refused", ""
		}
		msg = errorResponse(ce.code, text, detail)
	}
	_ = s.client.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
	_, _ = s.client.Write(msg)
}

// containsPassword guards against a password appearing in any text: it is
// never put there on purpose, this catches accidents. The session's user and
// database names do not count (see showsSecret).
func (s *session) containsPassword(b []byte) bool {
	return showsSecret(b, s.password, s.public...)
}

// scrub makes sure the returned (logged) error does not reveal the password:
// where it shows, it is replaced, and the kind, SQLSTATE and the rest of the
// text are kept.
func (s *session) scrub(err error) error {
	if !s.containsPassword([]byte(err.Error())) {
		return err
	}
	hide := func(text string) string {
		return string(bytes.ReplaceAll([]byte(text), s.password, []byte(redactedMark)))
	}
	var ce *connError
	if !errors.As(err, &ce) {
		return errors.New(hide(err.Error()))
	}
	text := hide(strings.TrimPrefix(ce.Error(), ce.kind.Error()+": "))
	return fmt.Errorf("%w: %s", ce.kind, text)
}

// redactedMark stands in for a password in a logged error.
const redactedMark = "[REDACTED]"

// upstream is an authenticated server connection.
type upstream struct {
	conn    net.Conn
	rd      *serverReader
	forward []byte // server messages to relay to the client, in order
	keyData *pgproto3.BackendKeyData
	tls     bool
	auth    string
}

// tlsAttempt says how one connection attempt negotiates TLS.
type tlsAttempt int

const (
	tlsOff  tlsAttempt = iota // never ask
	tlsTry                    // ask; continue in plaintext if the server says N
	tlsMust                   // ask; fail if the server says N
)

// attempt plans implement libpq's sslmode fallbacks: allow tries plaintext
// first and TLS if the server refuses the session; prefer tries TLS first
// and plaintext if the handshake fails or the server refuses the session.
func attemptPlan(m sslMode) []tlsAttempt {
	switch m {
	case sslDisable:
		return []tlsAttempt{tlsOff}
	case sslAllow:
		return []tlsAttempt{tlsOff, tlsMust}
	case sslPrefer:
		return []tlsAttempt{tlsTry, tlsOff}
	default:
		return []tlsAttempt{tlsMust}
	}
}

// retryable marks attempt failures after which the next attempt of the plan
// may run (the server refused before authenticating us, or TLS failed).
type retryable struct{ error }

func (r retryable) Unwrap() error { return r.error }

func (s *session) connectServer(t *target, startup []byte) (*upstream, error) {
	plan := attemptPlan(t.sslmode)
	var rejected error // the server's refusal in an earlier attempt
	for i, a := range plan {
		up, err := s.attempt(t, a, startup)
		if err == nil {
			return up, nil
		}
		var r retryable
		retry := errors.As(err, &r)
		if retry {
			err = r.error
		}
		if !retry || i+1 == len(plan) {
			// The server's own refusal says more than a failed fallback
			// (for example "does not support SSL" after sslmode allow).
			if rejected != nil && !errors.Is(err, ErrServerRejected) {
				return nil, rejected
			}
			return nil, err
		}
		if errors.Is(err, ErrServerRejected) {
			rejected = err
		}
		s.c.logger.Debugf("pg: sslmode %s: attempt %d failed, retrying: %v", t.sslmode, i+1, s.scrub(err))
	}
	panic("unreachable")
}

// isTooManyConnections reports whether err is the server's 53300 refusal
// (too many connections, for the server or for the role).
func isTooManyConnections(err error) bool {
	var ce *connError
	return errors.As(err, &ce) && errors.Is(ce.kind, ErrServerRejected) && ce.code == codeTooManyConnections
}

// attempt opens one server connection and authenticates.
func (s *session) attempt(t *target, a tlsAttempt, startup []byte) (*upstream, error) {
	d := net.Dialer{Timeout: s.c.cfg.connectTimeout, Deadline: s.deadline}
	conn, err := d.Dial(t.network, t.addr)
	if err != nil {
		return nil, newError(ErrTargetUnreachable, codeUnableToConnect, "could not connect to the PostgreSQL server", err)
	}
	_ = conn.SetDeadline(s.deadline)
	up := &upstream{conn: conn}
	fail := func(err error) (*upstream, error) {
		_ = conn.Close()
		return nil, err
	}
	if a != tlsOff {
		tc, err := s.negotiateServerTLS(conn, t, a)
		if err != nil {
			return fail(err)
		}
		if tc != nil {
			up.conn, up.tls = tc, true
		}
	}
	if _, err := up.conn.Write(startup); err != nil {
		return fail(newError(ErrTargetUnreachable, codeConnectionFailure, "lost the connection to the PostgreSQL server", err))
	}
	up.rd = newServerReader(up.conn)
	if err := s.authenticate(up, t, a); err != nil {
		return fail(err)
	}
	return up, nil
}

// negotiateServerTLS sends an SSLRequest and runs the TLS handshake. It
// returns a nil conn when the server declined and plaintext is acceptable.
func (s *session) negotiateServerTLS(conn net.Conn, t *target, a tlsAttempt) (net.Conn, error) {
	if _, err := conn.Write(encodeRequest(sslRequestCode)); err != nil {
		return nil, newError(ErrTargetUnreachable, codeConnectionFailure, "lost the connection to the PostgreSQL server", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		if isTimeout(err) {
			return nil, newError(ErrTargetUnreachable, codeConnectionFailure, "the PostgreSQL server did not answer in time (SSL negotiation)", err)
		}
		return nil, newError(ErrTargetUnreachable, codeConnectionFailure, "the PostgreSQL server closed the connection during SSL negotiation", err)
	}
	switch b[0] {
	case 'S':
	case 'N':
		if a == tlsMust {
			e := newError(ErrTargetNoTLS, codeUnableToConnect,
				fmt.Sprintf("the PostgreSQL server does not support SSL, but the service's sslmode %s requires it", t.sslmode), nil)
			e.detail = "sslmode is require unless set; set the service's credential sslmode to prefer or disable, or enable ssl on the server"
			if t.sslmodeSet {
				e.detail = fmt.Sprintf("the service's credential sslmode is %s; enable ssl on the server (or, on a network you trust, lower the service's sslmode)", t.sslmode)
			}
			return nil, e
		}
		return nil, nil
	case 'E':
		// A server too old to know SSLRequest; it has closed the connection.
		err := newError(ErrTargetUnreachable, codeUnableToConnect, "the PostgreSQL server rejected the SSL request", nil)
		if a == tlsTry {
			return nil, retryable{err}
		}
		return nil, err
	default:
		return nil, newError(ErrTargetProtocol, codeConnectionFailure,
			"received invalid response to SSL negotiation from the PostgreSQL server", fmt.Errorf("byte %q", b[0]))
	}
	if hasPendingData(conn) {
		return nil, newError(ErrTargetProtocol, codeConnectionFailure,
			"received unencrypted data after SSL response from the PostgreSQL server",
			errors.New("possible man-in-the-middle attack"))
	}
	tc := tls.Client(conn, t.tlsConf)
	if err := tc.Handshake(); err != nil {
		if isTimeout(err) {
			return nil, newError(ErrTargetUnreachable, codeConnectionFailure, "the PostgreSQL server did not answer in time (TLS handshake)", err)
		}
		e := newError(ErrTargetUnreachable, codeUnableToConnect, "TLS handshake with the PostgreSQL server failed", err)
		e.detail = tlsFailureDetail(err)
		if a == tlsTry {
			return nil, retryable{e}
		}
		return nil, e
	}
	return tc, nil
}

// tlsFailureDetail explains certificate verification failures to the
// client; they only name certificates, which the client would see if it
// connected directly.
func tlsFailureDetail(err error) string {
	var (
		host    x509.HostnameError
		unknown x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
		verify  *tls.CertificateVerificationError
		name    nameError
	)
	switch {
	case errors.As(err, &host):
		return "server certificate verification failed: " + host.Error()
	case errors.As(err, &name):
		return "server certificate verification failed: " + name.Error()
	case errors.As(err, &unknown):
		return "server certificate verification failed: " + unknown.Error()
	case errors.As(err, &invalid):
		return "server certificate verification failed: " + invalid.Error()
	case errors.As(err, &verify):
		return "server certificate verification failed"
	}
	return ""
}

// authenticate answers the server's authentication requests and reads its
// messages up to ReadyForQuery, collecting those the client must see.
func (s *session) authenticate(up *upstream, t *target, a tlsAttempt) error {
	var (
		sc       *scramClient
		scramOK  bool
		authOK   bool
		authSeen bool
	)
	defer func() {
		if sc != nil {
			sc.zero()
		}
	}()
	protoErr := func(format string, args ...any) error {
		return newError(ErrTargetProtocol, codeConnectionFailure, "the PostgreSQL server broke the protocol during the startup",
			fmt.Errorf(format, args...))
	}
	send := func(msg []byte) error {
		_, err := up.conn.Write(msg)
		clear(msg)
		if err != nil {
			return newError(ErrTargetUnreachable, codeConnectionFailure, "lost the connection to the PostgreSQL server", err)
		}
		return nil
	}
	// Like libpq, which says "no password supplied" without asking the
	// server: an empty password can never log in, and trying one costs the
	// role a failed login in the server's log.
	noPassword := func(method string) error {
		return newError(ErrConfig, codeInvalidPassword,
			"the PostgreSQL server asks for a password ("+method+") and the service has no password credential", nil)
	}
	for {
		typ, body, raw, err := up.rd.next()
		if err != nil {
			if errors.Is(err, errServerMsgSize) {
				return protoErr("%w", err)
			}
			if isTimeout(err) {
				return newError(ErrTargetUnreachable, codeConnectionFailure,
					"the PostgreSQL server did not answer in time", err)
			}
			return newError(ErrTargetUnreachable, codeConnectionFailure,
				"the PostgreSQL server closed the connection during the startup", err)
		}
		if len(up.forward)+len(raw) > maxStartupForward {
			return protoErr("more than %d bytes of startup messages", maxStartupForward)
		}
		msg, err := decodeBackend(typ, body)
		if err != nil {
			return protoErr("message %q: %w", typ, err)
		}
		if msg == nil {
			return protoErr("unexpected message type %q", typ)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			e := &connError{
				kind:  ErrServerRejected,
				code:  m.Code,
				msg:   m.Message,
				cause: &ServerError{Severity: m.Severity, Code: m.Code, Message: m.Message, Detail: m.Detail},
				raw:   bytes.Clone(raw),
			}
			if m.Code == codeInvalidPassword && bytes.HasSuffix(t.password, []byte("\n")) {
				s.c.logger.Warnf("pg: the server refused the password, which ends with a line break: a password file written with echo has one; write it with printf '%%s' or echo -n")
			}
			// The client gave no credentials: say whose were refused, so
			// that nobody looks for a password in the application.
			if !authOK && (m.Code == codeInvalidPassword || m.Code == codeInvalidAuthSpec) && m.Hint == "" {
				hinted := *m
				hinted.Hint = "secretless: the server refused the login the broker made with this service's credentials (from its provider); the client's own user name and password are not used"
				if b, err := hinted.Encode(nil); err == nil {
					e.raw = b
				}
			}
			// libpq's allow and prefer retry when the server refuses the
			// session before authentication succeeds (e.g. pg_hba has only
			// hostssl, or only hostnossl, lines for the user).
			if !authOK && ((a == tlsOff && t.sslmode == sslAllow) || (a == tlsTry && up.tls)) {
				return retryable{e}
			}
			return e
		case *pgproto3.NoticeResponse:
			// A notice that quotes the password (a hostile or broken
			// server, an extension echoing the login) is not relayed: the
			// client must never see the secret.
			if len(t.password) >= 4 && bytes.Contains(raw, t.password) {
				s.c.logger.Warnf("pg: a notice from the PostgreSQL server during the startup contained the password; not relayed to the client")
				continue
			}
			up.forward = append(up.forward, raw...)
		case *pgproto3.NegotiateProtocolVersion:
			if authSeen {
				return protoErr("NegotiateProtocolVersion after authentication started")
			}
			up.forward = append(up.forward, raw...)
		case *pgproto3.AuthenticationOk:
			if authOK {
				return protoErr("second AuthenticationOk")
			}
			if sc != nil && !scramOK {
				return newError(ErrServerAuth, codeInvalidAuthSpec, "the PostgreSQL server did not complete SCRAM authentication",
					errors.New("AuthenticationOk before a verified SASLFinal"))
			}
			if up.auth == "" {
				up.auth = "trust"
			}
			authOK, authSeen = true, true
			up.forward = append(up.forward, raw...)
		case *pgproto3.AuthenticationCleartextPassword:
			if authOK || authSeen {
				return protoErr("unexpected password request")
			}
			authSeen, up.auth = true, "password"
			if len(t.password) == 0 {
				return noPassword("password")
			}
			if err := send(passwordMessage(t.password)); err != nil {
				return err
			}
		case *pgproto3.AuthenticationMD5Password:
			if authOK || authSeen {
				return protoErr("unexpected md5 request")
			}
			authSeen, up.auth = true, "md5"
			if len(t.password) == 0 {
				return noPassword("md5")
			}
			digest := md5Password(t.username, t.password, m.Salt)
			err := send(passwordMessage(digest))
			clear(digest)
			if err != nil {
				return err
			}
		case *pgproto3.AuthenticationSASL:
			if authOK || authSeen {
				return protoErr("unexpected SASL request")
			}
			authSeen = true
			var cbind []byte
			var cbindOK bool
			if tc, ok := up.conn.(*tls.Conn); ok {
				cbind, cbindOK = tlsServerEndPoint(tc.ConnectionState())
			}
			sc, err = newSCRAMClient(m.AuthMechanisms, up.tls, cbind, cbindOK)
			if err != nil {
				return newError(ErrUnsupportedAuth, codeInvalidAuthSpec,
					"the PostgreSQL server requested a SASL mechanism the broker does not support", err)
			}
			sc.cache = s.c.scram
			up.auth = sc.mech
			if len(t.password) == 0 {
				return noPassword(sc.mech)
			}
			msg, err := saslInitialResponse(sc.mech, sc.clientFirst())
			if err != nil {
				return protoErr("encode SASLInitialResponse: %w", err)
			}
			if err := send(msg); err != nil {
				return err
			}
		case *pgproto3.AuthenticationSASLContinue:
			if sc == nil || sc.authMessage != nil {
				return protoErr("unexpected SASLContinue")
			}
			pw := saslPrep(t.password)
			sc.password = pw
			final, err := sc.clientFinal(m.Data)
			clear(pw)
			sc.password = nil
			if err != nil {
				return newError(ErrServerAuth, codeInvalidAuthSpec, "invalid SCRAM exchange with the PostgreSQL server", err)
			}
			msg, err := saslResponse(final)
			clear(final)
			if err != nil {
				return protoErr("encode SASLResponse: %w", err)
			}
			if err := send(msg); err != nil {
				return err
			}
		case *pgproto3.AuthenticationSASLFinal:
			if sc == nil || sc.authMessage == nil || scramOK {
				return protoErr("unexpected SASLFinal")
			}
			if err := sc.verifyServerFinal(m.Data); err != nil {
				return newError(ErrServerAuth, codeInvalidAuthSpec,
					"the PostgreSQL server failed to prove that it knows the password", err)
			}
			scramOK = true
		case *unsupportedAuth:
			return newError(ErrUnsupportedAuth, codeInvalidAuthSpec,
				fmt.Sprintf("the PostgreSQL server requested %s authentication, which the broker does not support", m.name()), nil)
		case *pgproto3.ParameterStatus, *pgproto3.BackendKeyData, *pgproto3.ReadyForQuery:
			if !authOK {
				return protoErr("message %q before AuthenticationOk", typ)
			}
			if k, ok := m.(*pgproto3.BackendKeyData); ok {
				up.keyData = &pgproto3.BackendKeyData{ProcessID: k.ProcessID, SecretKey: bytes.Clone(k.SecretKey)}
			}
			if p, ok := m.(*pgproto3.ParameterStatus); ok && t.revealsPassword(p.Value) {
				// As for notices: a hostile or broken server echoing the
				// password in a setting does not show it to the client.
				s.c.logger.Warnf("pg: the PostgreSQL server's setting %q during the startup contained the password; not relayed to the client", p.Name)
				continue
			}
			up.forward = append(up.forward, raw...)
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				return nil
			}
		default:
			return protoErr("unexpected message %T", m)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
