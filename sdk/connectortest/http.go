package connectortest

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

// HTTP is an HTTP connector loaded the way the broker loads one for a
// service of its HTTP forward proxy.
type HTTP struct {
	// Transport sends the requests Do decorates. Nil means a transport
	// like the broker's: no proxy, no added Accept-Encoding, no redirects
	// followed. Set it to an httptest.Server's Client().Transport to reach
	// a TLS test server.
	Transport http.RoundTripper

	opts      Options
	connector sdkhttp.Connector
	logger    *Logger

	mu        sync.Mutex
	decorated []decorated
}

type decorated struct {
	req  *http.Request
	snap snapshot
}

// snapshot is what the contract checks compare of a request.
type snapshot struct {
	method, url, host string
	header            http.Header
}

func snap(r *http.Request) snapshot {
	s := snapshot{method: r.Method, host: r.Host, header: r.Header.Clone()}
	if r.URL != nil {
		s.url = r.URL.String()
	}
	return s
}

// diff names what differs between two snapshots ("" when nothing does).
func (s snapshot) diff(o snapshot) string {
	var d []string
	if s.method != o.method {
		d = append(d, "method")
	}
	if s.url != o.url {
		d = append(d, "URL")
	}
	if s.host != o.host {
		d = append(d, "Host")
	}
	keys := map[string]bool{}
	for k := range s.header {
		keys[k] = true
	}
	for k := range o.header {
		keys[k] = true
	}
	var hs []string
	for k := range keys {
		if strings.Join(s.header[k], "\x00") != strings.Join(o.header[k], "\x00") {
			hs = append(hs, k)
		}
	}
	sort.Strings(hs)
	for _, k := range hs {
		d = append(d, "header "+k)
	}
	return strings.Join(d, ", ")
}

// LoadHTTP loads an HTTP connector from the value the plugin's
// GetHTTPPlugin returns: it checks opts.Info (when set), calls
// ValidateConfig (when the plugin implements http.Validator),
// ValidateCredentials (when it implements connector.CredentialsValidator
// and opts declares credentials) and NewConnector with opts.Config. A
// non-nil error is what would make the broker refuse to start.
func LoadHTTP(t testing.TB, p sdkhttp.Plugin, opts Options) (*HTTP, error) {
	t.Helper()
	c, logger, err := load(t, p, sdk.TypeHTTPConnector, sdk.SymbolGetHTTPPlugin, opts,
		func(r connector.Resources) sdkhttp.Connector { return p.NewConnector(r) })
	if err != nil {
		return nil, err
	}
	return &HTTP{opts: opts, connector: c, logger: logger}, nil
}

// Connector returns the connector NewConnector built.
func (k *HTTP) Connector() sdkhttp.Connector { return k.connector }

// Logger returns the logger the connector was given.
func (k *HTTP) Logger() *Logger { return k.logger }

// hopHeaders are removed from the outgoing request before the connector
// sees it, as the broker's proxy removes them.
var hopHeaders = []string{"Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Forwarded"}

// outgoing makes the request the connector decorates from the incoming
// one, as the broker's proxy does: a clone with its own header map and
// URL, without hop-by-hop, Proxy-* and forwarding headers.
func outgoing(in *http.Request) *http.Request {
	out := in.Clone(in.Context())
	out.RequestURI = ""
	if in.ContentLength == 0 {
		out.Body = nil
	}
	for _, f := range out.Header.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			out.Header.Del(textproto.TrimString(name))
		}
	}
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	for k := range out.Header {
		if strings.HasPrefix(k, "Proxy-") || strings.HasPrefix(k, "X-Forwarded-") {
			delete(out.Header, k)
		}
	}
	out.Host = ""
	return out
}

// Decorate does to one request what the broker's HTTP proxy does before
// sending it: it makes the outgoing request from in (see above; in itself
// is never handed to the connector), calls Connect on it with fresh copies
// of creds, zeroes them, and checks the contract. It returns the decorated
// request, ready to send, and Connect's error.
//
// The kit remembers the requests it decorated and reports a breach if a
// later Connect changes one of them, so do not change a returned request
// yourself: clone it first.
func (k *HTTP) Decorate(t testing.TB, in *http.Request, creds Credentials) (*http.Request, error) {
	t.Helper()
	if in.URL == nil || !in.URL.IsAbs() {
		t.Fatalf("connectortest: Decorate needs a request with an absolute URL (the target), got %v", in.URL)
	}
	before := snap(in)
	out := outgoing(in)
	secrets := creds.secrets(k.opts)
	values := creds.values()
	logged := k.logger.count()
	var cerr error
	perr := call("Connect", func() { cerr = k.connector.Connect(out, values) })
	values.Zero()
	checkLeaks(t, "a log message written during Connect", k.logger.textSince(logged), secrets)
	if perr != nil {
		breach(t, "%v; return an error instead", perr)
		checkLeaks(t, "the panic message", []byte(perr.Error()), secrets)
		return nil, perr
	}
	if d := before.diff(snap(in)); d != "" {
		breach(t, "Connect changed the incoming request (%s); it may change only the request it is given", d)
	}
	k.checkEarlier(t)
	if cerr != nil {
		checkLeaks(t, "the error Connect returned", []byte(cerr.Error()), secrets)
		return nil, cerr
	}
	if n := len(out.Header["Authorization"]); n > 1 {
		breach(t, "Connect left %d Authorization headers; the broker refuses a request with more than one", n)
		return nil, fmt.Errorf("%d Authorization headers", n)
	}
	if out.URL == nil || out.URL.Host == "" {
		breach(t, "Connect removed the target URL")
		return nil, errors.New("target URL removed")
	}
	k.mu.Lock()
	k.decorated = append(k.decorated, decorated{req: out, snap: snap(out)})
	k.mu.Unlock()
	return out, nil
}

// checkEarlier reports requests decorated before that changed since.
func (k *HTTP) checkEarlier(t testing.TB) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, d := range k.decorated {
		if diff := d.snap.diff(snap(d.req)); diff != "" {
			breach(t, "a request decorated earlier (number %d) changed afterwards (%s); Connect may change only the request it is given", i+1, diff)
			k.decorated[i].snap = snap(d.req) // report each change once
		}
	}
}

// Do decorates in with creds (see Decorate) and, when Connect succeeds,
// sends the decorated request to its URL, the target the test names, and
// returns the target's response. The credentials are zeroed before a byte
// is sent, as in the broker. The caller closes the response body.
func (k *HTTP) Do(t testing.TB, in *http.Request, creds Credentials) (*http.Response, error) {
	t.Helper()
	out, err := k.Decorate(t, in, creds)
	if err != nil {
		return nil, err
	}
	rt := k.Transport
	if rt == nil {
		rt = defaultTransport
	}
	return rt.RoundTrip(out)
}

// defaultTransport is like the broker's target transport: no proxy from the
// environment and no Accept-Encoding added (a signature may cover headers).
var defaultTransport = &http.Transport{Proxy: nil, DisableCompression: true}

// CheckConcurrent calls Connect on all requests at once, request i with
// creds[i], as the broker's proxy does for concurrent clients, and reports
// a breach when a decorated request carries a secret value of another
// request's credentials (a connector keeping per-request state in shared
// fields). It returns the decorated requests and Connect's errors, by
// index. Give every request different credential values.
func (k *HTTP) CheckConcurrent(t testing.TB, reqs []*http.Request, creds []Credentials) ([]*http.Request, []error) {
	t.Helper()
	if len(reqs) != len(creds) {
		t.Fatalf("connectortest: CheckConcurrent got %d requests and %d credential sets", len(reqs), len(creds))
	}
	for i, r := range reqs {
		if r.URL == nil || !r.URL.IsAbs() {
			t.Fatalf("connectortest: CheckConcurrent needs requests with absolute URLs, request %d has %v", i, r.URL)
		}
	}
	outs := make([]*http.Request, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			outs[i], errs[i] = k.Decorate(t, reqs[i], creds[i])
		}()
	}
	close(start)
	wg.Wait()
	for i, out := range outs {
		if out == nil {
			continue
		}
		text := requestText(out)
		for j := range creds {
			if j == i {
				continue
			}
			foreign := map[string]string{}
			for name, v := range creds[j].secrets(k.opts) {
				if !sharesValue(creds[i], v) {
					foreign[name] = v
				}
			}
			if names := leaks(text, foreign); len(names) > 0 {
				breach(t, "request %d carries the value of credential(s) %s of request %d; Connect may use only the credentials and request it is given",
					i, strings.Join(names, ", "), j)
			}
		}
	}
	return outs, errs
}

func sharesValue(c Credentials, v string) bool {
	for _, w := range c {
		if strings.Contains(w, v) {
			return true
		}
	}
	return false
}

// requestText is the request line and headers as sent.
func requestText(r *http.Request) []byte {
	var b bytes.Buffer
	b.WriteString(r.Method + " " + r.URL.String() + "\n")
	_ = r.Header.Write(&b)
	return b.Bytes()
}
