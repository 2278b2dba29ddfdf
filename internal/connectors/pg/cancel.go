package pg

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// cancelTimeout bounds the forwarding of one CancelRequest.
const cancelTimeout = 5 * time.Second

// cancelTarget says where a session's server lives, so that a CancelRequest
// arriving later on a new client connection reaches that server.
type cancelTarget struct {
	network, addr string
	tlsConf       *tls.Config // nil when the session was not encrypted
	// secret is the server's own secret key when the client was given
	// another one (a reusable connection); nil when they are the same.
	secret []byte
	// used is set, under the registry's lock, when a CancelRequest has been
	// matched to this session: its server connection is then never reused,
	// since the cancel may reach the server after a later client started.
	used bool
}

// cancelRegistry maps the backend key data the servers sent (process id and
// secret key, relayed to clients unchanged) to the server of each live
// session. Entries are removed when the session's server connection closes.
// Keys are not replaced: clients need the real process id, which appears in
// NotificationResponse and pg_backend_pid().
type cancelRegistry struct {
	mu sync.Mutex
	m  map[string]*cancelTarget
}

func newCancelRegistry() *cancelRegistry {
	return &cancelRegistry{m: make(map[string]*cancelTarget)}
}

func cancelKey(pid uint32, secret []byte) string {
	b := make([]byte, 4+len(secret))
	binary.BigEndian.PutUint32(b, pid)
	copy(b[4:], secret)
	return string(b)
}

// add registers a session and returns the function that removes it.
func (r *cancelRegistry) add(pid uint32, secret []byte, t *cancelTarget) (remove func()) {
	k := cancelKey(pid, secret)
	r.mu.Lock()
	r.m[k] = t
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		if r.m[k] == t { // a later session may have reused the key
			delete(r.m, k)
		}
		r.mu.Unlock()
	}
}

func (r *cancelRegistry) lookup(pid uint32, secret []byte) *cancelTarget {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.m[cancelKey(pid, secret)]
	if t != nil {
		t.used = true
	}
	return t
}

// wasUsed reports whether a CancelRequest was matched to t. Called after t
// has been removed, it is final: no later lookup can find t.
func (r *cancelRegistry) wasUsed(t *cancelTarget) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return t.used
}

func (r *cancelRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

var errCancelUnknownKey = errors.New("no live session has this cancel key")

// forwardCancel sends a client's CancelRequest packet to the server of the
// session it names and waits until the server closes the connection, which
// is how PostgreSQL says it has processed the request.
func forwardCancel(t *cancelTarget, pkt []byte, connectTimeout time.Duration) error {
	d := net.Dialer{Timeout: connectTimeout}
	conn, err := d.Dial(t.network, t.addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(cancelTimeout))
	var c net.Conn = conn
	if t.tlsConf != nil {
		if _, err := conn.Write(encodeRequest(sslRequestCode)); err != nil {
			return err
		}
		var b [1]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			return err
		}
		switch b[0] {
		case 'S':
			tc := tls.Client(conn, t.tlsConf)
			if err := tc.Handshake(); err != nil {
				return fmt.Errorf("tls: %w", err)
			}
			c = tc
		case 'N':
			// The session itself used TLS, so a refusal now means the server
			// (or something in between) declines TLS: never send the cancel
			// key, a secret of that session, in plaintext.
			return errors.New("server refused TLS for a cancel request of a TLS session")
		default:
			return fmt.Errorf("unexpected answer %q to SSLRequest", b[0])
		}
	}
	if _, err := c.Write(pkt); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, c) // until the server closes
	return nil
}
