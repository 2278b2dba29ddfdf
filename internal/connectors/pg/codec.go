package pg

// Wire codec helpers. Nothing in this file knows about connection state: it
// turns bytes into messages and back, and enforces length limits before it
// allocates. The connection state machine lives in connect.go.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Request codes carried in the version field of a startup packet.
const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102
)

const (
	// maxStartupPacketLen is PostgreSQL's MAX_STARTUP_PACKET_LENGTH, which
	// bounds a startup packet without its length word: the server refuses
	// longer ones, and so do we, before reading (let alone allocating) the
	// body. maxStartupPacket is the same bound on the whole packet.
	maxStartupPacketLen = 10000
	maxStartupPacket    = maxStartupPacketLen + 4
	// minStartupPacketLen is the length field plus the version field.
	minStartupPacketLen = 8
	// maxCancelPacketLen allows protocol 3.2's 256-byte cancel keys.
	maxCancelPacketLen = 12 + 256
	// maxServerMessageLen caps the messages we read from the server before
	// the relay starts (authentication requests, ParameterStatus, errors).
	maxServerMessageLen = 1 << 20
	// tlsHandshakeRecord is the first byte of a TLS ClientHello record.
	tlsHandshakeRecord = 0x16
)

var (
	errBadLength     = errors.New("invalid length of startup packet")
	errBadStartup    = errors.New("invalid startup packet layout")
	errShortMessage  = errors.New("message too short")
	errServerMsgSize = errors.New("server message length out of range")
)

// packetKind says what a client's first packet is.
type packetKind int

const (
	kindStartup packetKind = iota + 1
	kindSSLRequest
	kindGSSEncRequest
	kindCancelRequest
	kindUnknownRequest // a request code (major 1234) we do not know
	kindTLSClientHello // the first bytes of a direct TLS handshake
)

// param is one startup parameter; order is kept as the client sent it.
type param struct{ key, value string }

// startupPacket is the decoded first (or next) packet of a client.
type startupPacket struct {
	kind    packetKind
	version uint32  // protocol version (kindStartup) or request code
	params  []param // kindStartup only
	cancel  pgproto3.CancelRequest
	raw     []byte // the whole packet including its length word
}

func (p *startupPacket) major() uint32 { return p.version >> 16 }
func (p *startupPacket) minor() uint32 { return p.version & 0xffff }

// isTLSClientHello reports whether the first four bytes of a connection
// look like a TLS handshake record (a PostgreSQL 17 client with
// sslnegotiation=direct) rather than a startup packet length, which always
// starts with a zero byte.
func isTLSClientHello(hdr []byte) bool {
	return len(hdr) >= 2 && hdr[0] == tlsHandshakeRecord && hdr[1] == 0x03
}

// startupPacketLen validates the length word of a startup packet.
func startupPacketLen(hdr []byte) (int, error) {
	if len(hdr) < 4 {
		return 0, errShortMessage
	}
	n := binary.BigEndian.Uint32(hdr)
	if n < minStartupPacketLen || n > maxStartupPacket {
		return 0, fmt.Errorf("%w: %d", errBadLength, n)
	}
	return int(n), nil
}

// readStartupPacket reads one startup packet from r. hdr holds the first four
// bytes when the caller already read them (to look for a TLS ClientHello),
// or is nil. The length word is checked before the body is allocated.
func readStartupPacket(r io.Reader, hdr []byte) (*startupPacket, error) {
	var lenBuf [4]byte
	if hdr == nil {
		if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
			return nil, err
		}
		hdr = lenBuf[:]
	}
	n, err := startupPacketLen(hdr)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	copy(buf, hdr[:4])
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		return nil, err
	}
	return parseStartupPacket(buf)
}

// parseStartupPacket decodes a complete startup packet (length word
// included): a StartupMessage, SSLRequest, GSSENCRequest or CancelRequest.
func parseStartupPacket(pkt []byte) (*startupPacket, error) {
	n, err := startupPacketLen(pkt)
	if err != nil {
		return nil, err
	}
	if n != len(pkt) {
		return nil, fmt.Errorf("%w: length word %d, packet %d bytes", errBadLength, n, len(pkt))
	}
	p := &startupPacket{raw: pkt, version: binary.BigEndian.Uint32(pkt[4:8])}
	body := pkt[8:]
	switch {
	case p.version == sslRequestCode || p.version == gssEncRequestCode:
		if len(body) != 0 {
			return nil, fmt.Errorf("%w: encryption request with %d trailing bytes", errBadStartup, len(body))
		}
		p.kind = kindSSLRequest
		if p.version == gssEncRequestCode {
			p.kind = kindGSSEncRequest
		}
		return p, nil
	case p.version == cancelRequestCode:
		if len(pkt) > maxCancelPacketLen {
			return nil, fmt.Errorf("%w: cancel request of %d bytes", errBadLength, len(pkt))
		}
		if err := p.cancel.Decode(pkt[4:]); err != nil {
			return nil, fmt.Errorf("%w: %w", errBadStartup, err)
		}
		p.kind = kindCancelRequest
		return p, nil
	case p.major() == 1234:
		p.kind = kindUnknownRequest
		return p, nil
	}
	p.kind = kindStartup
	params, err := parseStartupParams(body)
	if err != nil {
		return nil, err
	}
	p.params = params
	return p, nil
}

// parseStartupParams decodes the NUL-terminated name/value pairs of a
// StartupMessage, which end with an empty name.
func parseStartupParams(body []byte) ([]param, error) {
	var params []param
	for {
		i := bytes.IndexByte(body, 0)
		if i < 0 {
			return nil, fmt.Errorf("%w: unterminated parameter name", errBadStartup)
		}
		if i == 0 {
			if len(body) != 1 {
				return nil, fmt.Errorf("%w: %d bytes after the terminator", errBadStartup, len(body)-1)
			}
			return params, nil
		}
		key := string(body[:i])
		body = body[i+1:]
		j := bytes.IndexByte(body, 0)
		if j < 0 {
			return nil, fmt.Errorf("%w: parameter %q has no value", errBadStartup, key)
		}
		params = append(params, param{key: key, value: string(body[:j])})
		body = body[j+1:]
	}
}

// encodeStartup encodes a StartupMessage with the given protocol version.
func encodeStartup(version uint32, params []param) ([]byte, error) {
	m := pgproto3.StartupMessage{ProtocolVersion: version, Parameters: make(map[string]string, len(params))}
	for _, p := range params {
		m.Parameters[p.key] = p.value
	}
	return m.Encode(nil)
}

// encodeRequest encodes an SSLRequest or GSSENCRequest.
func encodeRequest(code uint32) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, 8)
	binary.BigEndian.PutUint32(b[4:], code)
	return b
}

// errorResponse encodes a FATAL ErrorResponse.
func errorResponse(code, msg, detail string) []byte {
	e := pgproto3.ErrorResponse{
		Severity:            severityFatal,
		SeverityUnlocalized: severityFatal,
		Code:                code,
		Message:             msg,
		Detail:              detail,
	}
	b, err := e.Encode(nil)
	if err != nil {
		// ErrorResponse.Encode only fails for oversized messages; ours are short.
		panic(fmt.Sprintf("pg: encode error response: %v", err))
	}
	return b
}

// tlsAlertHandshakeFailure is a fatal TLS alert record (handshake_failure),
// sent to a client that starts with a TLS ClientHello when the broker does
// not offer TLS: the client reports a TLS error instead of a garbled reply.
var tlsAlertHandshakeFailure = []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}

// Frontend messages that carry secrets are encoded into plain byte slices
// (not pgproto3 structs with string fields) so the caller can zero them.

// passwordMessage encodes a PasswordMessage ('p') holding pw (cleartext or
// an md5 digest). The caller zeroes the result after writing it.
func passwordMessage(pw []byte) []byte {
	b := make([]byte, 0, 5+len(pw)+1)
	b = append(b, 'p', 0, 0, 0, 0)
	b = append(b, pw...)
	b = append(b, 0)
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	return b
}

// saslInitialResponse encodes a SASLInitialResponse.
func saslInitialResponse(mech string, data []byte) ([]byte, error) {
	m := pgproto3.SASLInitialResponse{AuthMechanism: mech, Data: data}
	return m.Encode(nil)
}

// saslResponse encodes a SASLResponse; the caller zeroes the result.
func saslResponse(data []byte) ([]byte, error) {
	m := pgproto3.SASLResponse{Data: data}
	return m.Encode(nil)
}

// serverReader reads backend messages during the startup phase, with a
// length cap checked before the body is allocated.
type serverReader struct {
	r   *bufio.Reader
	buf []byte // reused; holds the last message, header included
}

func newServerReader(r io.Reader) *serverReader {
	return &serverReader{r: bufio.NewReaderSize(r, 8192)}
}

// next returns the next message's type, body and whole raw bytes. The
// slices are only valid until the following call.
func (s *serverReader) next() (typ byte, body, raw []byte, err error) {
	if cap(s.buf) < 5 {
		s.buf = make([]byte, 5, 512)
	}
	hdr := s.buf[:5]
	if _, err := io.ReadFull(s.r, hdr); err != nil {
		return 0, nil, nil, err
	}
	n, err := serverMessageLen(hdr)
	if err != nil {
		return 0, nil, nil, err
	}
	if cap(s.buf) < 1+n {
		nb := make([]byte, 1+n)
		copy(nb, hdr)
		s.buf = nb
	}
	raw = s.buf[:1+n]
	if _, err := io.ReadFull(s.r, raw[5:]); err != nil {
		return 0, nil, nil, err
	}
	return raw[0], raw[5:], raw, nil
}

// buffered returns a copy of any bytes read from the server but not yet
// consumed, which must be relayed to the client before anything else.
func (s *serverReader) buffered() []byte {
	n := s.r.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := s.r.Peek(n)
	return bytes.Clone(b)
}

// serverMessageLen validates a backend message header (type byte and length
// word) and returns the length word.
func serverMessageLen(hdr []byte) (int, error) {
	if len(hdr) < 5 {
		return 0, errShortMessage
	}
	n := binary.BigEndian.Uint32(hdr[1:5])
	if n < 4 || n > maxServerMessageLen {
		return 0, fmt.Errorf("%w: type %q length %d", errServerMsgSize, hdr[0], n)
	}
	return int(n), nil
}

// decodeBackend decodes the backend messages that can occur before
// ReadyForQuery. Authentication requests ('R') are told apart by their
// first four bytes. Unknown message types return (nil, nil).
func decodeBackend(typ byte, body []byte) (pgproto3.BackendMessage, error) {
	var msg pgproto3.BackendMessage
	switch typ {
	case 'R':
		if len(body) < 4 {
			return nil, fmt.Errorf("authentication request: %w", errShortMessage)
		}
		switch binary.BigEndian.Uint32(body) {
		case pgproto3.AuthTypeOk:
			msg = &pgproto3.AuthenticationOk{}
		case pgproto3.AuthTypeCleartextPassword:
			msg = &pgproto3.AuthenticationCleartextPassword{}
		case pgproto3.AuthTypeMD5Password:
			msg = &pgproto3.AuthenticationMD5Password{}
		case pgproto3.AuthTypeSASL:
			msg = &pgproto3.AuthenticationSASL{}
		case pgproto3.AuthTypeSASLContinue:
			msg = &pgproto3.AuthenticationSASLContinue{}
		case pgproto3.AuthTypeSASLFinal:
			msg = &pgproto3.AuthenticationSASLFinal{}
		default:
			return &unsupportedAuth{code: binary.BigEndian.Uint32(body)}, nil
		}
	case 'E':
		msg = &pgproto3.ErrorResponse{}
	case 'N':
		msg = &pgproto3.NoticeResponse{}
	case 'S':
		msg = &pgproto3.ParameterStatus{}
	case 'K':
		msg = &pgproto3.BackendKeyData{}
	case 'Z':
		msg = &pgproto3.ReadyForQuery{}
	case 'v':
		msg = &pgproto3.NegotiateProtocolVersion{}
	default:
		return nil, nil
	}
	if err := msg.Decode(body); err != nil {
		return nil, err
	}
	return msg, nil
}

// unsupportedAuth stands for an authentication request the broker does not
// implement (Kerberos, SCM credentials, GSSAPI, SSPI ...).
type unsupportedAuth struct{ code uint32 }

func (*unsupportedAuth) Backend()            {}
func (*unsupportedAuth) Decode([]byte) error { return nil }
func (*unsupportedAuth) Encode([]byte) ([]byte, error) {
	return nil, errors.New("pg: unsupportedAuth is not encodable")
}

// name returns the method's name for messages.
func (u *unsupportedAuth) name() string {
	switch u.code {
	case 2:
		return "Kerberos V5"
	case pgproto3.AuthTypeSCMCreds:
		return "SCM credentials"
	case pgproto3.AuthTypeGSS, pgproto3.AuthTypeGSSCont:
		return "GSSAPI"
	case pgproto3.AuthTypeSSPI:
		return "SSPI"
	}
	return fmt.Sprintf("authentication request %d", u.code)
}

// tlsServerEndPoint computes the tls-server-end-point channel binding data
// (RFC 5929 section 4.1) of a TLS connection: the hash of the server's
// certificate with the hash of its signature algorithm (SHA-256 for MD5 and
// SHA-1). It reports false when the algorithm has no defined binding
// (Ed25519, RSA-PSS), in which case channel binding cannot be used.
func tlsServerEndPoint(cs tls.ConnectionState) ([]byte, bool) {
	if len(cs.PeerCertificates) == 0 {
		return nil, false
	}
	return certificateHash(cs.PeerCertificates[0])
}

var _ pgproto3.BackendMessage = (*unsupportedAuth)(nil)

// frameScanner follows message boundaries in one direction of a session
// (type byte, length word, body) without copying anything, so that a
// reused server connection knows where its client's Terminate is and
// whether the server is idle. It keeps state across chunks: a header or a
// ReadyForQuery status byte may be split between reads. After a malformed
// length it stops (bad) and the connection is never reused.
type frameScanner struct {
	hdr      [5]byte
	nhdr     int   // bytes of hdr filled
	left     int64 // body bytes of the current message still to come
	inBody   bool
	wantBody bool // report the current message's first body byte
	bad      bool
}

// frameEvent is one thing a scan saw: a message header completed at off
// (the offset in the chunk of the byte that completed it), or the first body
// byte of a message whose header asked for it.
type frameEvent struct {
	typ   byte
	off   int
	body0 int // first body byte, -1 for a header event
}

// scan feeds p and calls fn for each event; fn returns false to stop the
// scan (the rest of p is not looked at). wantFirst says which message types
// should also report their first body byte.
func (f *frameScanner) scan(p []byte, wantFirst func(typ byte) bool, fn func(frameEvent) bool) {
	i := 0
	for i < len(p) && !f.bad {
		if f.inBody {
			if f.wantBody && f.left > 0 {
				f.wantBody = false
				if !fn(frameEvent{typ: f.hdr[0], off: i, body0: int(p[i])}) {
					return
				}
			}
			n := int64(len(p) - i)
			if n >= f.left {
				i += int(f.left)
				f.left, f.inBody, f.wantBody = 0, false, false
			} else {
				f.left -= n
				i = len(p)
			}
			continue
		}
		c := copy(f.hdr[f.nhdr:], p[i:])
		f.nhdr += c
		i += c
		if f.nhdr < 5 {
			return
		}
		f.nhdr = 0
		n := binary.BigEndian.Uint32(f.hdr[1:5])
		if n < 4 {
			f.bad = true
			return
		}
		f.left = int64(n) - 4
		f.inBody = f.left > 0
		f.wantBody = wantFirst != nil && wantFirst(f.hdr[0]) && f.left > 0
		if !fn(frameEvent{typ: f.hdr[0], off: i - 1, body0: -1}) {
			return
		}
	}
}

// atBoundary reports whether the scanner is between messages.
func (f *frameScanner) atBoundary() bool { return !f.bad && f.nhdr == 0 && !f.inBody }

// encodeCancelRequest encodes a CancelRequest packet.
func encodeCancelRequest(pid uint32, secret []byte) []byte {
	b := make([]byte, 12+len(secret))
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	binary.BigEndian.PutUint32(b[4:], cancelRequestCode)
	binary.BigEndian.PutUint32(b[8:], pid)
	copy(b[12:], secret)
	return b
}
