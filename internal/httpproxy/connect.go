package httpproxy

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"
)

// connectRefusal is the status line sent for CONNECT when interception is
// off. Go clients show the reason phrase as their error, so it says what to
// do.
const connectRefusal = "405 CONNECT refused: send http:// URLs to this proxy and set forceSSL on the service"

const connectRefusalBody = `secretless: this proxy does not tunnel CONNECT requests.
Inside a tunnel the requests are encrypted between your client and the target,
so the proxy could not add credentials to them. Send plain http:// URLs to this
proxy instead and set forceSSL: true on the service: the proxy then speaks TLS
to the target itself. Clients that only speak HTTPS can be served with the
listener's interceptConnect option.
`

// tunnelHandshakeTimeout bounds the TLS handshake inside a CONNECT tunnel.
const tunnelHandshakeTimeout = 10 * time.Second

func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request) {
	if s.issuer == nil {
		s.refuseConnect(w, r)
		return
	}
	authority := r.Host
	host, port, err := net.SplitHostPort(authority)
	if err != nil || host == "" || port == "" {
		writeError(w, http.StatusBadRequest, "secretless: CONNECT needs host:port")
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "secretless: cannot take over the connection")
		return
	}
	tc := s.trackHijacked(c)
	if tc == nil {
		_ = c.Close()
		return
	}
	// The tracked conn stays registered until the handshake is done and the
	// tunnel belongs to the inner server (which tracks it from then on).
	defer s.untrack(tc)
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		_ = c.Close()
		return
	}
	var raw net.Conn = c
	if brw.Reader.Buffered() > 0 {
		// The client did not wait for our answer: keep what it already sent.
		raw = &prefixConn{Conn: c, r: brw.Reader}
	}
	leaf, err := s.issuer.certFor(host)
	if err != nil {
		s.log.Warn("cannot issue interception certificate", "host", host, "error", err)
		_ = c.Close()
		return
	}
	tlsConn := tls.Server(raw, &tls.Config{
		Certificates: []tls.Certificate{*leaf},
		NextProtos:   []string{"http/1.1"},
		MinVersion:   tls.VersionTLS12,
	})
	_ = c.SetDeadline(time.Now().Add(tunnelHandshakeTimeout))
	if err := tlsConn.HandshakeContext(r.Context()); err != nil {
		s.log.Info("TLS handshake in CONNECT tunnel failed", "authority", authority, "client", r.RemoteAddr, "error", err)
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	if !s.tunnels.push(&tunnelConn{Conn: tlsConn, authority: authority}) {
		_ = c.Close()
	}
}

// untrack forgets a tracked connection without closing it.
func (s *Server) untrack(c net.Conn) {
	t, ok := c.(*trackedConn)
	if !ok {
		return
	}
	t.once.Do(func() {
		s.mu.Lock()
		delete(s.hijacked, t.Conn)
		s.mu.Unlock()
		s.hwg.Done()
	})
}

func (s *Server) refuseConnect(w http.ResponseWriter, r *http.Request) {
	s.log.Info("CONNECT refused", "authority", r.Host, "client", r.RemoteAddr)
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		writeError(w, http.StatusMethodNotAllowed, connectRefusalBody)
		return
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = fmt.Fprintf(brw, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nX-Secretless-Error: 1\r\n"+
		"Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		connectRefusal, len(connectRefusalBody), connectRefusalBody)
	_ = brw.Flush()
}

// prefixConn reads first what a bufio.Reader already buffered.
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// tunnelConn is a decrypted CONNECT tunnel with the authority it was opened
// for.
type tunnelConn struct {
	net.Conn
	authority string
}

// chanListener hands tunnels to the inner HTTP server.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// certIssuer issues short-lived leaf certificates signed by the intercept CA.
type certIssuer struct {
	ca     *x509.Certificate
	caKey  crypto.Signer
	key    *ecdsa.PrivateKey
	mu     sync.Mutex
	cache  map[string]*tls.Certificate
	maxAge time.Duration
}

const issuedCertCacheSize = 1024

func newCertIssuer(ca tls.Certificate) *certIssuer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(fmt.Sprintf("httpproxy: generate key: %v", err))
	}
	signer, _ := ca.PrivateKey.(crypto.Signer)
	return &certIssuer{ca: ca.Leaf, caKey: signer, key: key, cache: map[string]*tls.Certificate{}, maxAge: 24 * time.Hour}
}

func (ci *certIssuer) certFor(host string) (*tls.Certificate, error) {
	if ci.caKey == nil || ci.ca == nil {
		return nil, errors.New("intercept CA key cannot sign")
	}
	now := time.Now()
	ci.mu.Lock()
	defer ci.mu.Unlock()
	if c, ok := ci.cache[host]; ok && c.Leaf.NotAfter.After(now.Add(time.Hour)) {
		return c, nil
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ci.maxAge),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ci.ca.NotAfter) {
		tmpl.NotAfter = ci.ca.NotAfter
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ci.ca, &ci.key.PublicKey, ci.caKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der, ci.ca.Raw}, PrivateKey: ci.key, Leaf: leaf}
	if len(ci.cache) >= issuedCertCacheSize {
		clear(ci.cache)
	}
	ci.cache[host] = c
	return c, nil
}

var _ net.Listener = (*chanListener)(nil)
