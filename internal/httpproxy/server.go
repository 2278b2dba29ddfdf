package httpproxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"os"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/text/unicode/norm"

	"github.com/secretless-broker/secretless-broker/internal/logging"
	"github.com/secretless-broker/secretless-broker/internal/proxy"
	"github.com/secretless-broker/secretless-broker/internal/redact"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

// Connector is the SDK's HTTP connector interface.
type Connector = sdkhttp.Connector

// FetchFunc returns fresh credentials; it is called once per request.
type FetchFunc = proxy.FetchFunc

// StatusCoder may be implemented by a connector's error to choose the status
// the client gets (for example 400 for a request the connector cannot sign).
// Without it a connector error is a 500.
type StatusCoder interface {
	HTTPStatus() int
}

// Route is one HTTP service on a listener.
type Route struct {
	Service string
	// Match: the route serves a request when any pattern matches the
	// request's absolute URL (scheme://host[:port]/path?query, as the client
	// addressed it, default ports omitted).
	Match           []*regexp.Regexp
	ForceSSL        bool
	RootCAs         *x509.CertPool // nil: system roots
	AllowWebSockets bool
	Timeouts        Timeouts
	Connector       Connector
	Fetch           FetchFunc // nil: the connector gets no credentials
	// Live, when set, holds each request's secrets while its connector
	// runs, so that the connector's log lines are redacted with them.
	Live *redact.Live
	// PublicErrors lets the text of a connector error with a 4xx status
	// (StatusCoder) reach the client. Set it only for connectors whose
	// error texts were reviewed to hold no secret (the built-in ones);
	// other connectors' clients get the status with a generic message.
	PublicErrors bool
}

// Defaults for Options.
const (
	DefaultMaxIdleConns        = 1024
	DefaultMaxIdleConnsPerHost = 256
	DefaultReadHeaderTimeout   = 30 * time.Second
	DefaultClientIdleTimeout   = 120 * time.Second
	DefaultMaxHeaderBytes      = 64 << 10
	// DefaultBodyIdleTimeout ends a request whose client stopped sending
	// its body: no byte for this long.
	DefaultBodyIdleTimeout = 60 * time.Second
)

// Options are listener-wide settings; zero values take the defaults.
type Options struct {
	// PassthroughUnmatched sends requests that match no route on without
	// credentials instead of refusing them with 403.
	PassthroughUnmatched bool
	// Intercept enables CONNECT interception with this CA.
	Intercept *InterceptCA
	// MaxIdleConns and MaxIdleConnsPerHost bound each route's pool of idle
	// target connections.
	MaxIdleConns, MaxIdleConnsPerHost int
	// ReadHeaderTimeout and IdleTimeout apply to client connections.
	ReadHeaderTimeout, IdleTimeout time.Duration
	// BodyIdleTimeout ends a request whose client sent no byte of its body
	// for this long (DefaultBodyIdleTimeout).
	BodyIdleTimeout time.Duration
	// Observe, when set, is called after each proxied request with the
	// service that handled it ("(unmatched)" for refused requests) and the
	// status code sent to the client. It feeds the broker's metrics.
	Observe func(service string, code int)
}

// Server is a forward proxy on one listener.
type Server struct {
	l      net.Listener
	log    *slog.Logger
	opts   Options
	routes []*route
	pass   *route // for unmatched requests when passthrough is on
	via    string // this server's Via token, to detect loops
	srv    *http.Server
	rp     *httputil.ReverseProxy

	// interception
	tunnels *chanListener
	inner   *http.Server
	issuer  *certIssuer

	mu       sync.Mutex
	fresh    map[net.Conn]struct{} // client conns that have not sent a request yet
	hijacked map[net.Conn]struct{}
	hwg      sync.WaitGroup
	closed   bool

	inFlight atomic.Int64 // requests being served (tunnelled ones included)
}

// Active is how many requests the server is serving now, and upgraded or
// tunnelled connections it holds, for the broker's logs.
func (s *Server) Active() int {
	s.mu.Lock()
	n := len(s.hijacked)
	s.mu.Unlock()
	return int(s.inFlight.Load()) + n
}

type route struct {
	Route
	transport *http.Transport
}

// New builds a server for l. Routes are tried in order; the first whose
// pattern matches wins. A nil log discards messages.
func New(l net.Listener, routes []Route, log *slog.Logger, opts Options) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxIdleConns <= 0 {
		opts.MaxIdleConns = DefaultMaxIdleConns
	}
	if opts.MaxIdleConnsPerHost <= 0 {
		opts.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if opts.BodyIdleTimeout <= 0 {
		opts.BodyIdleTimeout = DefaultBodyIdleTimeout
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultClientIdleTimeout
	}
	var tok [6]byte
	_, _ = rand.Read(tok[:])
	s := &Server{l: l, log: log, opts: opts, via: "secretless-" + hex.EncodeToString(tok[:]),
		hijacked: map[net.Conn]struct{}{}, fresh: map[net.Conn]struct{}{}}
	for _, r := range routes {
		r.Timeouts = r.Timeouts.withDefaults()
		s.routes = append(s.routes, &route{Route: r, transport: newTransport(r, opts)})
	}
	if opts.PassthroughUnmatched {
		pr := Route{Service: "(passthrough)", Timeouts: Timeouts{}.withDefaults()}
		s.pass = &route{Route: pr, transport: newTransport(pr, opts)}
	}
	// The library's messages may quote what a target sent, which can hold
	// the credential injected into the request: quoted text is dropped.
	errLog := logging.StdLogger(log.Handler(), slog.LevelDebug)
	s.rp = &httputil.ReverseProxy{
		Rewrite:        s.rewrite,
		Transport:      dispatchTransport{},
		ErrorHandler:   s.errorHandler,
		ModifyResponse: s.modifyResponse,
		BufferPool:     bufferPool{},
		ErrorLog:       errLog,
	}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
		ErrorLog:          errLog,
		// No HTTP/2 on the client side: there is no TLS there, and h2c
		// upgrades are declined.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ConnState:    s.connState,
	}
	if opts.Intercept != nil {
		s.issuer = newCertIssuer(opts.Intercept.Cert)
		s.tunnels = newChanListener(l.Addr())
		s.inner = &http.Server{
			Handler:           http.HandlerFunc(s.serveTunneled),
			ReadHeaderTimeout: opts.ReadHeaderTimeout,
			IdleTimeout:       opts.IdleTimeout,
			MaxHeaderBytes:    DefaultMaxHeaderBytes,
			ErrorLog:          errLog,
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				if tc, ok := c.(*tunnelConn); ok {
					return context.WithValue(ctx, authorityKey{}, tc.authority)
				}
				return ctx
			},
		}
	}
	return s
}

func newTransport(r Route, o Options) *http.Transport {
	d := &net.Dialer{Timeout: r.Timeouts.Dial, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil, // never chain to $HTTP_PROXY, which may be this broker
		DialContext:           d.DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: r.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   r.Timeouts.TLSHandshake,
		ResponseHeaderTimeout: r.Timeouts.ResponseHeader,
		IdleConnTimeout:       r.Timeouts.IdleConn,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          o.MaxIdleConns,
		MaxIdleConnsPerHost:   o.MaxIdleConnsPerHost,
		// Pass Accept-Encoding and compressed bodies through untouched, and
		// add no header a connector did not see.
		DisableCompression: true,
		// HTTP/1.1 only: upgrades and streaming behave the same on every
		// target.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
}

func (s *Server) connState(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == http.StateNew && !s.closed {
		s.fresh[c] = struct{}{}
		return
	}
	if st == http.StateNew {
		_ = c.Close()
		return
	}
	delete(s.fresh, c)
}

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Serve serves until Shutdown, when it returns nil, or until the listener
// fails.
func (s *Server) Serve() error {
	if s.inner != nil {
		go func() { _ = s.inner.Serve(s.tunnels) }()
	}
	err := s.srv.Serve(s.l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets in-flight requests (and upgraded or
// tunnelled connections) finish until ctx is done, then closes what is left
// and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	var errs []error
	outer := make(chan error, 1)
	go func() { outer <- s.srv.Shutdown(ctx) }()
	// http.Server waits 5 s for connections that never sent a request
	// (clients open spare ones); they carry nothing in flight, so close them.
	s.mu.Lock()
	for c := range s.fresh {
		_ = c.Close()
	}
	s.mu.Unlock()
	errs = append(errs, <-outer)
	if s.inner != nil {
		s.tunnels.Close()
		errs = append(errs, s.inner.Shutdown(ctx))
	}
	done := make(chan struct{})
	go func() { s.hwg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	if ctx.Err() != nil {
		_ = s.srv.Close()
		if s.inner != nil {
			_ = s.inner.Close()
		}
		s.mu.Lock()
		for c := range s.hijacked {
			_ = c.Close()
		}
		s.mu.Unlock()
		<-done
	}
	for _, r := range s.allRoutes() {
		r.transport.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

func (s *Server) allRoutes() []*route {
	rs := s.routes
	if s.pass != nil {
		rs = append(rs[:len(rs):len(rs)], s.pass)
	}
	return rs
}

// match returns the first route whose pattern matches u.
func (s *Server) match(u string) *route {
	for _, r := range s.routes {
		for _, re := range r.Match {
			if re.MatchString(u) {
				return r
			}
		}
	}
	return nil
}

type stateKey struct{}
type authorityKey struct{}

// reqState travels with one request through the ReverseProxy.
type reqState struct {
	route  *route
	target *url.URL
	err    error // set by rewrite; makes the round trip fail
	start  time.Time
	shown  string // URL for logs and messages (no query, no userinfo)
	// secrets are the forms of the request's secret credentials, kept
	// while the exchange lasts (the request carries them anyway) to redact
	// what comes back: response headers such as a Location that repeats an
	// injected query, and transport errors that quote the target.
	secrets *redact.Forms
	body    *idleBody // the client's body, when it has one
}

func (st *reqState) zero() {
	st.secrets.Zero()
}

func stateOf(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	return st
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	if r.Method == http.MethodConnect {
		s.serveConnect(w, r)
		return
	}
	if !r.URL.IsAbs() {
		hint := "set http_proxy=http://" + s.l.Addr().String() + " in the client"
		if s.l.Addr().Network() == "unix" {
			hint = "the client must use this unix socket as its HTTP proxy"
		}
		s.refuseRequest(w, http.StatusBadRequest, "secretless: this is a forward proxy: send absolute-form request URIs ("+hint+")")
		return
	}
	s.proxy(w, r, r.URL)
}

// refuseRequest answers a request the proxy refuses before matching it to
// a service, and counts it (as "(unmatched)") in the metrics, so that
// probing shows there too.
func (s *Server) refuseRequest(w http.ResponseWriter, code int, msg string) {
	writeError(w, code, msg)
	if obs := s.opts.Observe; obs != nil {
		obs("(unmatched)", code)
	}
}

// serveTunneled serves requests decrypted from an intercepted CONNECT tunnel.
func (s *Server) serveTunneled(w http.ResponseWriter, r *http.Request) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	authority, _ := r.Context().Value(authorityKey{}).(string)
	if r.Method == http.MethodConnect || authority == "" {
		s.refuseRequest(w, http.StatusBadRequest, "secretless: CONNECT inside a tunnel is not supported")
		return
	}
	u := &url.URL{Scheme: "https", Host: stripDefaultPort("https", authority),
		Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	s.proxy(w, r, u)
}

// hasDotSegment reports whether an escaped URL path has a "." or ".."
// segment once decoded, also where the separator is an encoded slash or a
// backslash, as some servers take them: a pattern such as ^http://h/api/
// must not let /api/../admin (which the target resolves to /admin) through.
func hasDotSegment(escaped string) bool {
	// Decoded up to three times: a server (or a chain of them) may decode
	// more than once ("%252e", "%25%32%65"). Each decoding keeps a "%" that
	// starts no escape as it is, as lenient servers do, so that a stray one
	// cannot hide the layers behind it.
	variants := []string{escaped}
	for cur := escaped; len(variants) < 4; {
		dec := lenientUnescape(cur)
		if dec == cur {
			break
		}
		variants = append(variants, dec)
		cur = dec
	}
	// Dots other stacks take for ".": overlong UTF-8 (old Tomcat, IIS), and
	// every character that NFKC turns into dots or slashes (the fullwidth
	// full stop, the one and two dot leaders, the small full stop, the
	// fullwidth and small solidus and reverse solidus).
	overlong := strings.NewReplacer("\xc0\xae", ".", "\xe0\x80\xae", ".", "\xc0\xaf", "/", "\xe0\x80\xaf", "/")
	for _, p := range variants {
		for _, p := range []string{p, norm.NFKC.String(overlong.Replace(p))} {
			if dotSegment(p) {
				return true
			}
		}
	}
	return false
}

// dotSegment reports whether a decoded path has a "." or ".." segment.
func dotSegment(p string) bool {
	// A decoded "?" or "#" ends the path for a server that parses it again.
	for _, seg := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' || r == '?' || r == '#' }) {
		// Java servers drop ";params" from a segment before resolving it
		// ("..;" is ".."), and String.trim drops blanks and control
		// characters at both ends.
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		seg = strings.TrimFunc(seg, func(r rune) bool { return r <= ' ' })
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// lenientUnescape decodes every valid %XX escape of s and keeps the rest.
func lenientUnescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func stripDefaultPort(scheme, hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return hostport
}

func (s *Server) proxy(w http.ResponseWriter, r *http.Request, u *url.URL) {
	if u.Scheme != "http" && u.Scheme != "https" {
		s.refuseRequest(w, http.StatusBadRequest, fmt.Sprintf("secretless: unsupported URL scheme %q: use http:// (with forceSSL on the service) or https://", u.Scheme))
		return
	}
	if u.Host == "" {
		s.refuseRequest(w, http.StatusBadRequest, "secretless: request URL has no host")
		return
	}
	for _, v := range r.Header["Via"] {
		if strings.Contains(v, s.via) {
			s.refuseRequest(w, http.StatusLoopDetected, "secretless: request loops back to this proxy")
			return
		}
	}
	if strings.EqualFold(r.Method, "TRACE") || strings.EqualFold(r.Method, "TRACK") {
		s.refuseRequest(w, http.StatusMethodNotAllowed, "secretless: "+r.Method+" is refused: the target would echo the request, injected credentials included, back to the client")
		return
	}
	if hasDotSegment(u.EscapedPath()) {
		s.refuseRequest(w, http.StatusBadRequest, "secretless: the request path has a . or .. segment (perhaps percent-encoded): the target would resolve it after the broker matched the URL to a service; send the resolved path")
		return
	}
	target := *u
	target.User = nil
	target.Fragment, target.RawFragment = "", ""
	target.Host = stripDefaultPort(target.Scheme, target.Host)
	matchURL := target.String()
	shown := (&url.URL{Scheme: target.Scheme, Host: target.Host, Path: target.Path, RawPath: target.RawPath}).String()
	rt := s.match(matchURL)
	if obs := s.opts.Observe; obs != nil {
		name := "(unmatched)"
		if rt != nil {
			name = rt.Service
		} else if s.pass != nil {
			name = s.pass.Service
		}
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		w = rec
		defer func() { obs(name, rec.code) }()
	}
	if rt == nil {
		if s.pass == nil {
			s.log.Info("request matches no service; refused", "url", shown, "client", r.RemoteAddr)
			writeError(w, http.StatusForbidden, "secretless: no service on this listener authenticates "+shown+
				"; add a pattern matching it to a service's authenticateURLsMatching")
			return
		}
		rt = s.pass
	}
	if up := upgradeType(r.Header); up != "" {
		switch {
		case up == "h2c":
			// Declined: the request is served as plain HTTP/1.1.
			r.Header.Del("Upgrade")
			r.Header.Del("Http2-Settings")
		case up == "websocket" && rt.AllowWebSockets:
			w = &hijackTracker{ResponseWriter: w, s: s}
		case up == "websocket":
			writeError(w, http.StatusForbidden, fmt.Sprintf("secretless: service %s does not allow WebSocket upgrades (set allowWebSockets: true)", rt.Service))
			return
		default:
			writeError(w, http.StatusForbidden, fmt.Sprintf("secretless: upgrade to %q is not supported", up))
			return
		}
	}
	if rt.ForceSSL {
		target.Scheme = "https"
		target.Host = stripDefaultPort("https", target.Host)
	}
	st := &reqState{route: rt, target: &target, start: time.Now(), shown: shown}
	defer st.zero()
	ctx := context.WithValue(r.Context(), stateKey{}, st)
	rc := http.NewResponseController(w)
	if rt.Timeouts.Request > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rt.Timeouts.Request)
		defer cancel()
		// A body still being read when the time is up ends too (the
		// round trip waits for it otherwise).
		stop := context.AfterFunc(ctx, func() { _ = rc.SetReadDeadline(time.Now()) })
		defer stop()
	}
	if r.Body != nil && r.Body != http.NoBody {
		st.body = &idleBody{ReadCloser: r.Body, rc: rc, idle: s.opts.BodyIdleTimeout}
		r.Body = st.body
	}
	s.rp.ServeHTTP(w, r.WithContext(ctx))
}

// framing names the response headers redaction leaves alone: they frame
// the message, and a short secret that happens to match a date or a length
// would break it.
var framing = map[string]bool{"Content-Length": true, "Date": true, "Content-Type": true, "Transfer-Encoding": true,
	"Content-Encoding": true, "Connection": true, "Keep-Alive": true}

// redactHeader replaces the secrets in every value of h but framing ones.
func redactHeader(h map[string][]string, secrets *redact.Forms) {
	for k, vs := range h {
		if framing[http.CanonicalHeaderKey(k)] {
			continue
		}
		if secrets.ShownIgnoringCase(k) {
			// A name that shows a secret (a target echoing it as a header
			// name) cannot be rewritten into a meaningful one: it goes.
			delete(h, k)
			continue
		}
		for i, v := range vs {
			if red := secrets.String(v); red != v {
				vs[i] = red
			}
		}
	}
}

// trailerRedactor redacts a response's trailers when its body ends, before
// the proxy copies them.
type trailerRedactor struct {
	io.ReadCloser
	res     *http.Response
	secrets *redact.Forms
}

func (t *trailerRedactor) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err == io.EOF {
		redactHeader(t.res.Trailer, t.secrets)
	}
	return n, err
}

// maxRedactedBody is the largest response body redactSmallBody reads.
const maxRedactedBody = 64 << 10

// redactWait is how long redactSmallBody waits for a body to arrive whole
// before it passes the body on as it comes, unredacted, as for a long one:
// a slow body must not hold back the response's headers.
const redactWait = time.Second

// redactSmallBody replaces res.Body, when it is at most maxRedactedBody
// bytes and arrives within redactWait, with its redacted text; any other
// body passes unchanged, from what has arrived so far on.
func redactSmallBody(res *http.Response, secrets *redact.Forms) {
	if res.ContentLength > maxRedactedBody || res.Body == nil || res.Body == http.NoBody ||
		res.Request.Method == http.MethodHead || res.StatusCode == http.StatusNotModified {
		return
	}
	p := newPrefetch(res.Body, maxRedactedBody)
	head, whole := p.wait(redactWait)
	if !whole {
		res.Body = p
		return
	}
	_ = res.Body.Close()
	red := secrets.String(string(head))
	res.Body = io.NopCloser(strings.NewReader(red))
	if len(res.Trailer) > 0 {
		// Read to its end, the body has filled in the trailers: they go
		// out after it, so it stays chunked (and they are redacted too).
		res.ContentLength = -1
		res.Header.Del("Content-Length")
		return
	}
	res.ContentLength = int64(len(red))
	res.Header.Set("Content-Length", strconv.Itoa(len(red)))
	res.TransferEncoding = nil
}

// prefetch reads a body ahead, up to a limit, in a goroutine of its own;
// read as a Reader it gives what it has read and then the rest of the body.
type prefetch struct {
	body io.ReadCloser
	mu   sync.Mutex
	cond *sync.Cond
	buf  []byte
	err  error // the body's error (io.EOF at its end)
	done bool  // the goroutine has stopped reading
}

func newPrefetch(body io.ReadCloser, limit int) *prefetch {
	p := &prefetch{body: body}
	p.cond = sync.NewCond(&p.mu)
	go func() {
		tmp := make([]byte, 4096)
		for {
			n, err := body.Read(tmp)
			p.mu.Lock()
			p.buf = append(p.buf, tmp[:n]...)
			over := len(p.buf) > limit
			if err != nil || over {
				p.err, p.done = err, true
			}
			p.cond.Broadcast()
			p.mu.Unlock()
			if err != nil || over {
				return
			}
		}
	}()
	return p
}

// wait waits up to d for the whole body and returns it, with true, when it
// came whole (ended by EOF within the limit).
func (p *prefetch) wait(d time.Duration) ([]byte, bool) {
	timedOut := false
	t := time.AfterFunc(d, func() {
		p.mu.Lock()
		timedOut = true
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer t.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.done && !timedOut {
		p.cond.Wait()
	}
	if p.done && errors.Is(p.err, io.EOF) {
		return p.buf, true
	}
	return nil, false
}

func (p *prefetch) Read(b []byte) (int, error) {
	p.mu.Lock()
	for len(p.buf) == 0 && !p.done {
		p.cond.Wait()
	}
	if len(p.buf) > 0 {
		n := copy(b, p.buf)
		p.buf = p.buf[n:]
		p.mu.Unlock()
		return n, nil
	}
	err := p.err
	p.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return p.body.Read(b) // stopped at the limit: the rest comes straight
}

func (p *prefetch) Close() error { return p.body.Close() }

// idleBody is a request body that fails once the client has sent nothing
// for idle: a stalled upload must not hold its connection and buffers.
// The deadline it sets on the client connection applies while the body is
// being read only: it is lifted once the whole body has been read, so that
// a long answer to an upload is not cut. After a failed read it stays (it
// has passed), so that the server's own read of the rest of the body fails
// at once too, and the connection is closed.
type idleBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	idle    time.Duration
	mu      sync.Mutex
	done    bool
	stalled bool // a read ran into the idle deadline
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if !b.done {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	b.mu.Unlock()
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.mu.Lock()
		if !b.done {
			b.done = true
			if errors.Is(err, io.EOF) {
				_ = b.rc.SetReadDeadline(time.Time{})
			} else if errors.Is(err, os.ErrDeadlineExceeded) {
				b.stalled = true
			}
		}
		b.mu.Unlock()
	}
	return n, err
}

// stalledUpload reports whether the body failed because the client sent
// nothing of it for the idle time.
func (b *idleBody) stalledUpload() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stalled
}

func (b *idleBody) Close() error {
	b.mu.Lock()
	b.done = true
	b.mu.Unlock()
	return b.ReadCloser.Close()
}

func upgradeType(h http.Header) string {
	hasUpgrade := false
	for _, v := range h["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				hasUpgrade = true
			}
		}
	}
	if !hasUpgrade {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(h.Get("Upgrade")))
}

// rewrite runs after the ReverseProxy removed hop-by-hop headers: it points
// the request at the target and lets the connector add credentials.
func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.In.Context())
	out := pr.Out
	out.URL = st.target
	out.Host = ""
	for k := range out.Header {
		// ReverseProxy drops Forwarded and X-Forwarded-For/Host/Proto; the
		// rest of the X-Forwarded-* family goes too, so that nothing the
		// client claims about the path to the target is passed on.
		if strings.HasPrefix(k, "Proxy-") || strings.HasPrefix(k, "X-Forwarded-") {
			delete(out.Header, k)
		}
	}
	out.Header["Via"] = append(out.Header["Via"], "1.1 "+s.via)
	if st.route.Connector == nil {
		return
	}
	st.err = s.decorate(out, st.route)
}

// decorate fetches credentials, runs the connector and zeroes the
// credentials. A connector panic becomes an error.
func (s *Server) decorate(out *http.Request, r *route) (err error) {
	ctx, cancel := context.WithTimeout(out.Context(), r.Timeouts.Credentials)
	defer cancel()
	var creds connector.CredentialValuesByID
	if r.Fetch != nil {
		creds, err = r.Fetch(ctx)
	}
	if creds == nil && err == nil {
		creds = connector.CredentialValuesByID{}
	}
	if st := stateOf(out.Context()); st != nil && err == nil {
		st.secrets = redact.NewForms(redact.Secrets(creds))
	}
	if err != nil {
		return &proxyError{status: http.StatusBadGateway, public: "credentials for service " + r.Service + " are unavailable",
			err: fmt.Errorf("fetch credentials: %w", err)}
	}
	defer creds.Zero()
	defer r.Live.Add(creds)() // removed before the values are zeroed
	defer func() {
		if p := recover(); p != nil {
			s.log.Debug("connector panic stack", "service", r.Service, "stack", string(debug.Stack()))
			err = &proxyError{status: http.StatusInternalServerError, public: "connector of service " + r.Service + " failed",
				err: proxy.Redact(fmt.Errorf("connector panicked: %v", p), creds)}
		}
	}()
	if cerr := r.Connector.Connect(out, creds); cerr != nil {
		status := http.StatusInternalServerError
		var sc StatusCoder
		if errors.As(cerr, &sc) && sc.HTTPStatus() >= 400 && sc.HTTPStatus() <= 599 {
			status = sc.HTTPStatus()
		}
		red := proxy.Redact(cerr, creds)
		public := "connector of service " + r.Service + " failed"
		if (status < 500 || status == http.StatusServiceUnavailable) && r.PublicErrors {
			// A 4xx (or a 503: retry later) from a built-in connector
			// explains what the client must change; its text was checked
			// to hold no secret (and redacted). A plugin's text is never
			// shown: only its status is kept.
			public = red.Error()
		}
		return &proxyError{status: status, public: public, err: fmt.Errorf("connector: %w", red)}
	}
	if n := len(out.Header["Authorization"]); n > 1 {
		return &proxyError{status: http.StatusInternalServerError, public: "connector of service " + r.Service + " failed",
			err: fmt.Errorf("connector left %d Authorization headers; exactly one may reach the target", n)}
	}
	if out.URL == nil || out.URL.Host == "" {
		return &proxyError{status: http.StatusInternalServerError, public: "connector of service " + r.Service + " failed",
			err: errors.New("connector removed the target URL")}
	}
	return nil
}

// proxyError is a failure before the round trip, with the text the client
// may see.
type proxyError struct {
	status int
	public string
	err    error
}

func (e *proxyError) Error() string { return e.err.Error() }
func (e *proxyError) Unwrap() error { return e.err }

// dispatchTransport sends each request with its route's transport, or fails
// it with the error rewrite recorded.
type dispatchTransport struct{}

func (dispatchTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	st := stateOf(r.Context())
	if st == nil {
		return nil, errors.New("httpproxy: request without route state")
	}
	if st.err != nil {
		return nil, st.err
	}
	if !st.secrets.Empty() {
		// Informational responses (103 Early Hints ...) are passed on by
		// the proxy's own hook, which runs after this one.
		r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
			Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
				redactHeader(h, st.secrets)
				return nil
			},
		}))
	}
	return st.route.transport.RoundTrip(r)
}

func (s *Server) modifyResponse(res *http.Response) error {
	if st := stateOf(res.Request.Context()); st != nil && !st.secrets.Empty() {
		redactHeader(res.Header, st.secrets)
		// A redirect's small body usually repeats its Location.
		if enc := res.Header.Get("Content-Encoding"); res.StatusCode >= 300 && res.StatusCode < 400 && res.Body != nil &&
			(enc == "" || strings.EqualFold(enc, "identity")) {
			redactSmallBody(res, st.secrets)
		}
		// Trailers arrive after the body; they are copied once it is read.
		if res.Body != nil && res.ContentLength < 0 {
			res.Body = &trailerRedactor{ReadCloser: res.Body, res: res, secrets: st.secrets}
		}
	}
	if s.log.Enabled(res.Request.Context(), slog.LevelDebug) {
		if st := stateOf(res.Request.Context()); st != nil {
			s.log.Debug("request proxied", "service", st.route.Service, "method", res.Request.Method,
				"url", st.shown, "status", res.StatusCode, "duration", time.Since(st.start))
		}
	}
	return nil
}

func (s *Server) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st := stateOf(r.Context())
	service, shown := "", ""
	if st != nil {
		service, shown = st.route.Service, st.shown
	}
	status := http.StatusBadGateway
	var public string
	var pe *proxyError
	var ne net.Error
	switch {
	case st != nil && st.body.stalledUpload() && !errors.Is(r.Context().Err(), context.DeadlineExceeded):
		// The client stopped sending its body: its fault, not the target's.
		status, public = http.StatusRequestTimeout, fmt.Sprintf("the client sent no bytes of the request body for %s", st.body.idle)
	case st != nil && st.body.stalledUpload():
		status, public = http.StatusGatewayTimeout, "the request timed out (timeouts.request) before the client had sent its whole body"
	case errors.As(err, &pe):
		status, public = pe.status, pe.public
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		status, public = http.StatusGatewayTimeout, "target timed out: "+err.Error()
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		s.log.Debug("client went away", "service", service, "url", shown)
		w.WriteHeader(http.StatusBadGateway)
		return
	default:
		public = "target unreachable or failed: " + err.Error()
	}
	level := slog.LevelWarn
	if status < 500 {
		level = slog.LevelInfo
	}
	logged := err.Error()
	if st != nil {
		// Transport errors may quote what the target sent back, which may
		// repeat an injected credential.
		public, logged = st.secrets.String(public), st.secrets.String(logged)
	}
	s.log.Log(r.Context(), level, "request failed", "service", service, "method", r.Method, "url", shown, "status", status, "answer", public, "error", logged)
	writeError(w, status, "secretless: "+public)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Secretless-Error", "1")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, msg)
}

// bufferPool recycles the ReverseProxy's copy buffers.
type bufferPool struct{}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(bufPool.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { bufPool.Put(&b) }

// hijackTracker records connections the ReverseProxy takes over for an
// upgrade, so Shutdown can wait for them and close them when time is up.
type hijackTracker struct {
	http.ResponseWriter
	s *Server
}

func (h *hijackTracker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	tc := h.s.trackHijacked(c)
	if tc == nil {
		_ = c.Close()
		return nil, nil, errors.New("server is shutting down")
	}
	return tc, brw, nil
}

func (h *hijackTracker) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// trackHijacked registers c until it is closed.
func (s *Server) trackHijacked(c net.Conn) net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.hijacked[c] = struct{}{}
	s.hwg.Add(1)
	return &trackedConn{Conn: c, s: s}
}

type trackedConn struct {
	net.Conn
	s    *Server
	once sync.Once
}

func (t *trackedConn) Close() error {
	err := t.Conn.Close()
	t.once.Do(func() {
		t.s.mu.Lock()
		delete(t.s.hijacked, t.Conn)
		t.s.mu.Unlock()
		t.s.hwg.Done()
	})
	return err
}

// CloseWrite passes half-closes on, which the ReverseProxy's upgrade copy
// uses when available.
func (t *trackedConn) CloseWrite() error {
	if cw, ok := t.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

var _ http.Hijacker = (*hijackTracker)(nil)

// statusRecorder remembers the status code written, for Options.Observe.
// Unwrap keeps http.ResponseController (flush, hijack for WebSockets)
// working through it.
type statusRecorder struct {
	http.ResponseWriter
	code    int
	written bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.written && (code >= 200 || code == http.StatusSwitchingProtocols) {
		r.code, r.written = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
