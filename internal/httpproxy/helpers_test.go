package httpproxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
	sdklog "github.com/secretless-broker/secretless-broker/sdk/log"
)

// testCA is a CA generated for one test.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	return newTestCAWith(t, name, nil)
}

// newTestCAWith is newTestCA with its template changed by edit first.
func newTestCAWith(t testing.TB, name string, edit func(*x509.Certificate)) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kd, _ := x509.MarshalECPrivateKey(key)
	return &testCA{cert: cert, key: key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})}
}

// files writes the CA's certificate and key into dir.
func (ca *testCA) files(t testing.TB) (certFile, keyFile string) {
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := os.WriteFile(certFile, ca.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, ca.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// serverCert issues a certificate for 127.0.0.1 and localhost.
func (ca *testCA) serverCert(t testing.TB) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// echoed is what the echo target saw.
type echoed struct {
	Method           string      `json:"method"`
	Host             string      `json:"host"`
	URI              string      `json:"uri"`
	Header           http.Header `json:"header"`
	BodySHA256       string      `json:"bodySHA256"`
	BodyLen          int64       `json:"bodyLen"`
	ContentLength    int64       `json:"contentLength"`
	TransferEncoding []string    `json:"transferEncoding"`
	TLS              bool        `json:"tls"`
}

// target is an echo server that counts the connections it accepted.
type target struct {
	*httptest.Server
	newConns atomic.Int64
}

func echoHandler(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, _ := io.Copy(h, r.Body)
	e := echoed{Method: r.Method, Host: r.Host, URI: r.RequestURI, Header: r.Header,
		BodySHA256: hex.EncodeToString(h.Sum(nil)), BodyLen: n, ContentLength: r.ContentLength,
		TransferEncoding: r.TransferEncoding, TLS: r.TLS != nil}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(e)
}

func newTarget(t testing.TB, ca *testCA, h http.Handler) *target {
	t.Helper()
	if h == nil {
		h = http.HandlerFunc(echoHandler)
	}
	tg := &target{Server: httptest.NewUnstartedServer(h)}
	tg.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			tg.newConns.Add(1)
		}
	}
	if ca != nil {
		tg.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}}
		tg.StartTLS()
	} else {
		tg.Start()
	}
	t.Cleanup(tg.Close)
	return tg
}

// hostPort returns the target's host:port.
func (tg *target) hostPort() string { return tg.Listener.Addr().String() }

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// staticFetch returns a fresh copy of creds on every call (the proxy zeroes
// what it gets).
func staticFetch(creds map[string]string) FetchFunc {
	return func(context.Context) (connector.CredentialValuesByID, error) {
		out := connector.CredentialValuesByID{}
		for k, v := range creds {
			out[k] = []byte(v)
		}
		return out, nil
	}
}

type resources struct{ cfg []byte }

func (r resources) Config() []byte        { return r.cfg }
func (r resources) Logger() sdklog.Logger { return nil }

// routeFromYAML builds a route the way the broker does: ParseConfig, then the
// connector gets the remainder.
func routeFromYAML(t testing.TB, service, block string, p sdkhttp.Plugin, fetch FetchFunc) (Route, *Config) {
	t.Helper()
	cfg, rest, err := ParseConfig([]byte(block))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if v, ok := p.(sdkhttp.Validator); ok {
		if err := v.ValidateConfig(rest); err != nil {
			t.Fatalf("ValidateConfig(%q): %v", rest, err)
		}
	}
	return cfg.Route(service, p.NewConnector(resources{cfg: rest}), fetch), cfg
}

// startProxy serves routes on a fresh loopback listener until the test ends.
func startProxy(t testing.TB, routes []Route, opts Options) (*Server, *syncBuf) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	s := New(l, routes, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), opts)
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, logs
}

// proxyClient is an http.Client that uses the proxy for every URL.
func proxyClient(s *Server, roots *x509.CertPool) *http.Client {
	pu := &url.URL{Scheme: "http", Host: s.Addr().String()}
	return &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots},
			DisableCompression: true, MaxIdleConnsPerHost: 64},
		Timeout: 30 * time.Second,
	}
}

// getEcho sends req and decodes the echo.
func doEcho(t testing.TB, c *http.Client, req *http.Request) echoed {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: status %d: %s", req.Method, req.URL, resp.StatusCode, body)
	}
	var e echoed
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("decode echo %q: %v", body, err)
	}
	return e
}

// requireTool returns the path of a binary, skipping the test when it is
// missing, or failing it when SECRETLESS_REQUIRE_INTEGRATION=1.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("SECRETLESS_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("%s is required (SECRETLESS_REQUIRE_INTEGRATION=1) but not found: %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// rawTarget serves every connection on a fresh loopback listener with
// handle (which need not speak HTTP correctly), until the test ends, and
// returns the listener's address.
func rawTarget(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l.Addr().String()
}
