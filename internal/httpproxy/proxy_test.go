package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/connectors/basicauth"
	"github.com/secretless-broker/secretless-broker/internal/connectors/generichttp"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

// bearerPlugin plugs in exactly like the examples/plugins/bearer plugin.
var bearerPlugin = sdkhttp.PluginFunc(func(connector.Resources) sdkhttp.Connector {
	return sdkhttp.ConnectorFunc(func(r *http.Request, c connector.CredentialValuesByID) error {
		if len(c["token"]) == 0 {
			return errors.New("bearer: credential token is missing")
		}
		r.Header.Set("Authorization", "Bearer "+string(c["token"]))
		return nil
	})
})

func TestConnectorsThroughProxy(t *testing.T) {
	ca := newTestCA(t, "target CA")
	caFile, _ := ca.files(t)
	plain := newTarget(t, nil, nil)
	secure := newTarget(t, ca, nil)

	userPass := map[string]string{"username": "alice", "password": "s3cr3t-pw"}
	tests := []struct {
		name     string
		plugin   sdkhttp.Plugin
		block    string
		creds    map[string]string
		tls      bool
		path     string
		wantAuth string
		wantURI  string // "" means path unchanged
		wantHdr  map[string]string
	}{
		{name: "basic_auth plain", plugin: basicauth.Plugin(), creds: userPass, path: "/v1/x?a=1",
			wantAuth: "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cr3t-pw"))},
		{name: "basic_auth forceSSL", plugin: basicauth.Plugin(), creds: userPass, tls: true, path: "/v1/x",
			wantAuth: "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cr3t-pw"))},
		{name: "generic_http headers", plugin: generichttp.Plugin(), creds: map[string]string{"token": "tok-123", "username": "bob", "password": "pw"},
			block:    "headers:\n  Authorization: 'token {{ .token }}'\n  X-Basic: '{{ base64 (printf \"%s:%s\" .username .password) }}'\n",
			path:     "/repos",
			wantAuth: "token tok-123", wantHdr: map[string]string{"X-Basic": base64.StdEncoding.EncodeToString([]byte("bob:pw"))}},
		{name: "generic_http query params keep client order", plugin: generichttp.Plugin(), creds: map[string]string{"api_key": "k&y=1"},
			block: "queryParams:\n  key: '{{ .api_key }}'\n", path: "/maps?z=2&key=client&a=%2F1",
			wantURI: "/maps?z=2&a=%2F1&key=k%26y%3D1"},
		{name: "bearer plugin forceSSL", plugin: bearerPlugin, creds: map[string]string{"token": "abc.def"}, tls: true, path: "/",
			wantAuth: "Bearer abc.def"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := plain
			block := "authenticateURLsMatching: ['^http://127\\.0\\.0\\.1:']\n" + tt.block
			if tt.tls {
				tg = secure
				block += "forceSSL: true\ncaBundle: " + caFile + "\n"
			}
			rt, _ := routeFromYAML(t, "svc", block, tt.plugin, staticFetch(tt.creds))
			s, _ := startProxy(t, []Route{rt}, Options{})
			req, _ := http.NewRequest(http.MethodGet, "http://"+tg.hostPort()+tt.path, nil)
			req.Header.Set("Authorization", "Basic client-sent-fake")
			e := doEcho(t, proxyClient(s, nil), req)
			if tt.wantAuth != "" {
				if got := e.Header["Authorization"]; len(got) != 1 || got[0] != tt.wantAuth {
					t.Errorf("Authorization = %q, want exactly [%q]", got, tt.wantAuth)
				}
			}
			for k, v := range tt.wantHdr {
				if got := e.Header[k]; len(got) != 1 || got[0] != v {
					t.Errorf("%s = %q, want [%q]", k, got, v)
				}
			}
			wantURI := tt.path
			if tt.wantURI != "" {
				wantURI = tt.wantURI
			}
			if e.URI != wantURI {
				t.Errorf("target saw URI %q, want %q", e.URI, wantURI)
			}
			if e.Host != tg.hostPort() {
				t.Errorf("target saw Host %q, want %q", e.Host, tg.hostPort())
			}
			if e.TLS != tt.tls {
				t.Errorf("target TLS = %v, want %v", e.TLS, tt.tls)
			}
		})
	}
}

func TestRoutingBySharedListener(t *testing.T) {
	var sawC atomic.Bool
	tg := newTarget(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/c/") {
			sawC.Store(true)
		}
		echoHandler(w, r)
	}))
	a, _ := routeFromYAML(t, "a", "authenticateURLsMatching: '^http://[^/]+/a/'", bearerPlugin, staticFetch(map[string]string{"token": "for-a"}))
	b, _ := routeFromYAML(t, "b", "authenticateURLsMatching:\n  - '^http://[^/]+/b/'\n  - '/also-b$'", bearerPlugin, staticFetch(map[string]string{"token": "for-b"}))
	s, logs := startProxy(t, []Route{a, b}, Options{})
	c := proxyClient(s, nil)
	for _, tt := range []struct{ path, want string }{{"/a/1", "Bearer for-a"}, {"/b/2", "Bearer for-b"}, {"/x/also-b", "Bearer for-b"}} {
		t.Run(tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+tg.hostPort()+tt.path, nil)
			if got := doEcho(t, c, req).Header["Authorization"]; len(got) != 1 || got[0] != tt.want {
				t.Errorf("Authorization = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("unmatched refused", func(t *testing.T) {
		resp, err := c.Get("http://" + tg.hostPort() + "/c/secret-path?q=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "no service on this listener authenticates http://"+tg.hostPort()+"/c/secret-path") {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		if strings.Contains(string(body), "q=1") {
			t.Errorf("refusal echoes the query: %q", body)
		}
		if sawC.Load() {
			t.Errorf("unmatched request reached the target")
		}
		if !strings.Contains(logs.String(), "matches no service") {
			t.Errorf("refusal not logged")
		}
	})
}

func TestPassthroughUnmatched(t *testing.T) {
	tg := newTarget(t, nil, nil)
	a, cfg := routeFromYAML(t, "a", "authenticateURLsMatching: '^http://nowhere/'\npassthroughUnmatched: true", bearerPlugin, staticFetch(map[string]string{"token": "t"}))
	opts, err := ListenerOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := startProxy(t, []Route{a}, opts)
	req, _ := http.NewRequest(http.MethodGet, "http://"+tg.hostPort()+"/open", nil)
	req.Header.Set("Authorization", "mine")
	e := doEcho(t, proxyClient(s, nil), req)
	if got := e.Header["Authorization"]; len(got) != 1 || got[0] != "mine" {
		t.Errorf("passthrough changed Authorization: %q", got)
	}
}

// rawRequest writes a request to the proxy byte for byte and returns the
// response.
func rawRequest(t testing.TB, proxyAddr, raw string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body
}

func TestHopByHopAndProxyHeadersStripped(t *testing.T) {
	tg := newTarget(t, nil, nil)
	rt, _ := routeFromYAML(t, "svc", "authenticateURLsMatching: '^http://'", bearerPlugin, staticFetch(map[string]string{"token": "real"}))
	s, _ := startProxy(t, []Route{rt}, Options{})
	raw := "GET http://" + tg.hostPort() + "/h HTTP/1.1\r\n" +
		"Host: " + tg.hostPort() + "\r\n" +
		"Connection: keep-alive, X-Drop-Me, Authorization\r\n" + // naming Authorization must not drop the injected one
		"X-Drop-Me: 1\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Proxy-Authorization: Basic cHJveHk6cHc=\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"Proxy-Anything: x\r\n" +
		"Te: gzip\r\n" +
		"Forwarded: for=1.2.3.4\r\n" +
		"X-Forwarded-For: 1.2.3.4\r\n" +
		"X-Forwarded-Port: 8443\r\n" +
		"Authorization: Bearer fake-1\r\n" +
		"Authorization: Bearer fake-2\r\n" +
		"X-Keep: kept\r\n" +
		"\r\n"
	resp, body := rawRequest(t, s.Addr().String(), raw)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var e echoed
	if err := jsonUnmarshal(body, &e); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"X-Drop-Me", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Proxy-Anything", "Te", "Forwarded", "X-Forwarded-For", "X-Forwarded-Port"} {
		if v, ok := e.Header[h]; ok {
			t.Errorf("target got %s: %q", h, v)
		}
	}
	if got := e.Header["Authorization"]; len(got) != 1 || got[0] != "Bearer real" {
		t.Errorf("Authorization = %q, want exactly [Bearer real]", got)
	}
	if got := e.Header["X-Keep"]; len(got) != 1 {
		t.Errorf("end-to-end header lost: %q", got)
	}
	if conn := e.Header["Connection"]; len(conn) > 0 && strings.Contains(strings.ToLower(strings.Join(conn, ",")), "x-drop-me") {
		t.Errorf("Connection forwarded: %q", conn)
	}
}

func TestBodies(t *testing.T) {
	tg := newTarget(t, nil, nil)
	rt, _ := routeFromYAML(t, "svc", "authenticateURLsMatching: '^http://'", bearerPlugin, staticFetch(map[string]string{"token": "real"}))
	s, _ := startProxy(t, []Route{rt}, Options{})
	c := proxyClient(s, nil)
	big := make([]byte, 5<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>11)
	}
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	tests := []struct {
		name      string
		method    string
		body      func() io.Reader
		length    int64 // -1 for chunked
		want      []byte
		wantCL    int64
		wantChunk bool
	}{
		{name: "5 MB chunked upload", method: http.MethodPut, body: func() io.Reader { return io.MultiReader(bytes.NewReader(big)) }, length: -1, want: big, wantCL: -1, wantChunk: true},
		{name: "5 MB with length", method: http.MethodPost, body: func() io.Reader { return bytes.NewReader(big) }, length: int64(len(big)), want: big, wantCL: int64(len(big))},
		{name: "empty POST", method: http.MethodPost, body: func() io.Reader { return http.NoBody }, length: 0, want: nil, wantCL: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://"+tg.hostPort()+"/upload", tt.body())
			req.ContentLength = tt.length
			if tt.length == 0 {
				req.Body = http.NoBody
			}
			e := doEcho(t, c, req)
			if e.BodySHA256 != sum(tt.want) || e.BodyLen != int64(len(tt.want)) {
				t.Errorf("target got %d bytes (sha %s), want %d (sha %s)", e.BodyLen, e.BodySHA256, len(tt.want), sum(tt.want))
			}
			if e.ContentLength != tt.wantCL {
				t.Errorf("target ContentLength = %d, want %d", e.ContentLength, tt.wantCL)
			}
			if tt.wantChunk != (len(e.TransferEncoding) > 0) {
				t.Errorf("transfer encoding = %q, want chunked=%v", e.TransferEncoding, tt.wantChunk)
			}
			if tt.name == "empty POST" {
				if got := e.Header["Content-Length"]; len(got) != 1 || got[0] != "0" {
					t.Errorf("Content-Length header = %q, want [0]", got)
				}
			}
		})
	}
	t.Run("large response streamed", func(t *testing.T) {
		dl := newTarget(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(big)
		}))
		resp, err := c.Get("http://" + dl.hostPort() + "/dl")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if sum(got) != sum(big) {
			t.Fatalf("download corrupted: %d bytes", len(got))
		}
	})
}

func TestUpgrades(t *testing.T) {
	ws := newTarget(t, nil, http.HandlerFunc(wsEchoHandler))
	allowed, _ := routeFromYAML(t, "ws", "authenticateURLsMatching: '^http://[^/]+/ws'\nallowWebSockets: true", bearerPlugin, staticFetch(map[string]string{"token": "ws-token"}))
	denied, _ := routeFromYAML(t, "plain", "authenticateURLsMatching: '^http://[^/]+/plain'", bearerPlugin, staticFetch(map[string]string{"token": "t"}))
	s, _ := startProxy(t, []Route{allowed, denied}, Options{})

	t.Run("websocket echo", func(t *testing.T) {
		conn, br, resp := wsDial(t, s.Addr().String(), "http://"+ws.hostPort()+"/ws")
		defer conn.Close()
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", resp.StatusCode)
		}
		// The target echoes the Authorization it got in a response header;
		// the broker redacts the token on the way back, which also proves
		// that the target saw it.
		if got := resp.Header.Get("X-Auth-Seen"); got != "Bearer [REDACTED]" {
			t.Errorf("target's echo of Authorization reached the client as %q", got)
		}
		for _, msg := range []string{"hello", strings.Repeat("x", 70000)} {
			wsWrite(t, conn, []byte(msg))
			if got := wsRead(t, br); string(got) != msg {
				t.Fatalf("echo of %d bytes came back as %d bytes", len(msg), len(got))
			}
		}
	})
	t.Run("websocket refused without allowWebSockets", func(t *testing.T) {
		conn, _, resp := wsDial(t, s.Addr().String(), "http://"+ws.hostPort()+"/plain")
		conn.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})
	t.Run("h2c declined", func(t *testing.T) {
		tg := newTarget(t, nil, nil)
		raw := "GET http://" + tg.hostPort() + "/plain HTTP/1.1\r\nHost: " + tg.hostPort() + "\r\n" +
			"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
		resp, body := rawRequest(t, s.Addr().String(), raw)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var e echoed
		_ = jsonUnmarshal(body, &e)
		if _, ok := e.Header["Upgrade"]; ok {
			t.Errorf("Upgrade: h2c reached the target")
		}
		if _, ok := e.Header["Http2-Settings"]; ok {
			t.Errorf("HTTP2-Settings reached the target")
		}
	})
}

func TestConnectRefusedByDefault(t *testing.T) {
	rt, _ := routeFromYAML(t, "svc", "authenticateURLsMatching: '^https?://'", bearerPlugin, staticFetch(map[string]string{"token": "t"}))
	s, _ := startProxy(t, []Route{rt}, Options{})
	_, err := proxyClient(s, nil).Get("https://127.0.0.1:1/")
	if err == nil || !strings.Contains(err.Error(), "CONNECT refused: send http:// URLs to this proxy and set forceSSL") {
		t.Fatalf("err = %v, want the CONNECT refusal", err)
	}
	resp, body := rawRequest(t, s.Addr().String(), "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(string(body), "forceSSL") {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
}

func TestErrors(t *testing.T) {
	const secret = "hunter2-very-secret"
	tg := newTarget(t, nil, nil)
	slow := newTarget(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	}))
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	failing := func(c sdkhttp.ConnectorFunc) sdkhttp.Plugin {
		return sdkhttp.PluginFunc(func(connector.Resources) sdkhttp.Connector { return c })
	}
	okFetch := staticFetch(map[string]string{"token": secret})
	tests := []struct {
		name       string
		plugin     sdkhttp.Plugin
		fetch      FetchFunc
		block      string
		url        string
		wantStatus int
		wantBody   string
		wantLog    string
	}{
		{name: "credential fetch fails", plugin: bearerPlugin, url: "http://" + tg.hostPort() + "/",
			fetch: func(context.Context) (connector.CredentialValuesByID, error) {
				return nil, errors.New("environment variable API_TOKEN is not set")
			},
			wantStatus: 502, wantBody: "credentials for service svc are unavailable", wantLog: "API_TOKEN is not set"},
		{name: "connector error quoting the secret", url: "http://" + tg.hostPort() + "/", fetch: okFetch,
			plugin: failing(func(_ *http.Request, c connector.CredentialValuesByID) error {
				return fmt.Errorf("token %s rejected", c["token"])
			}),
			wantStatus: 500, wantBody: "connector of service svc failed", wantLog: "token [REDACTED] rejected"},
		{name: "connector panics with the secret", url: "http://" + tg.hostPort() + "/", fetch: okFetch,
			plugin: failing(func(_ *http.Request, c connector.CredentialValuesByID) error {
				panic("boom " + string(c["token"]))
			}),
			wantStatus: 500, wantBody: "connector of service svc failed", wantLog: "connector panicked: boom [REDACTED]"},
		{name: "two Authorization headers", url: "http://" + tg.hostPort() + "/", fetch: okFetch,
			plugin: failing(func(r *http.Request, c connector.CredentialValuesByID) error {
				r.Header.Add("Authorization", "a")
				r.Header.Add("Authorization", "b")
				return nil
			}),
			wantStatus: 500, wantLog: "2 Authorization headers"},
		{name: "target unreachable", plugin: bearerPlugin, fetch: okFetch, url: "http://" + deadAddr + "/",
			wantStatus: 502, wantBody: "target unreachable", wantLog: "connection refused"},
		{name: "target too slow", plugin: bearerPlugin, fetch: okFetch, url: "http://" + slow.hostPort() + "/",
			block: "timeouts:\n  responseHeader: 200ms\n", wantStatus: 504, wantBody: "timed out"},
		{name: "request timeout", plugin: bearerPlugin, fetch: okFetch, url: "http://" + slow.hostPort() + "/",
			block: "timeouts:\n  request: 300ms\n", wantStatus: 504, wantBody: "timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, _ := routeFromYAML(t, "svc", "authenticateURLsMatching: '^http://'\n"+tt.block, tt.plugin, tt.fetch)
			s, logs := startProxy(t, []Route{rt}, Options{})
			resp, err := proxyClient(s, nil).Get(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus || !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("got %d %q, want %d with %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, logs)
			}
			if strings.Contains(string(body), secret) || strings.Contains(logs.String(), secret) {
				t.Errorf("secret leaked:\nbody %q\nlog %s", body, logs)
			}
		})
	}
}

func TestRotatedCredential(t *testing.T) {
	tg := newTarget(t, nil, nil)
	var n atomic.Int64
	fetch := func(context.Context) (connector.CredentialValuesByID, error) {
		return connector.CredentialValuesByID{"token": []byte(fmt.Sprintf("v%d", n.Load()))}, nil
	}
	rt, _ := routeFromYAML(t, "svc", "authenticateURLsMatching: '^http://'", bearerPlugin, fetch)
	s, _ := startProxy(t, []Route{rt}, Options{})
	c := proxyClient(s, nil)
	for i := range 3 {
		n.Store(int64(i))
		req, _ := http.NewRequest(http.MethodGet, "http://"+tg.hostPort()+"/", nil)
		want := fmt.Sprintf("Bearer v%d", i)
		if got := doEcho(t, c, req).Header.Get("Authorization"); got != want {
			t.Fatalf("request %d: Authorization %q, want %q", i, got, want)
		}
	}
}

func TestCredentialsZeroedAfterRequest(t *testing.T) {
	tg := newTarget(t, nil, nil)
	var kept []byte
	p := sdkhttp.PluginFunc(func(connector.Resources) sdkhttp.Connector {
		return sdkhttp.ConnectorFunc(func(r *http.Request, c connector.CredentialValuesByID) error {
			kept = c["token"] // a connector must not do this; the test looks later
			r.Header.Set("Authorization", "Bearer "+string(c["token"]))
			return nil
		})
	})
	rt, _ := routeFromYAML(t, "svc", "authenticateURLsMatching: '^http://'", p, staticFetch(map[string]string{"token": "zero-me"}))
	s, _ := startProxy(t, []Route{rt}, Options{})
	req, _ := http.NewRequest(http.MethodGet, "http://"+tg.hostPort()+"/", nil)
	if got := doEcho(t, proxyClient(s, nil), req).Header.Get("Authorization"); got != "Bearer zero-me" {
		t.Fatalf("Authorization %q", got)
	}
	if len(kept) == 0 || !bytes.Equal(kept, make([]byte, len(kept))) {
		t.Fatalf("credential not zeroed: %q", kept)
	}
}

func TestKeepAliveToTarget(t *testing.T) {
	tg := newTarget(t, nil, nil)
	rt, _ := routeFromYAML(t, "svc", "authenticateURLsMatching: '^http://'", bearerPlugin, staticFetch(map[string]string{"token": "t"}))
	s, _ := startProxy(t, []Route{rt}, Options{})
	c := proxyClient(s, nil)
	const workers, each = 16, 50
	wave := func() {
		errs := make(chan error, workers)
		for range workers {
			go func() {
				for range each {
					resp, err := c.Get("http://" + tg.hostPort() + "/k")
					if err != nil {
						errs <- err
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				errs <- nil
			}()
		}
		for range workers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	wave()
	first := tg.newConns.Load()
	// Dial races may open a few more connections than clients at first.
	if first > 2*workers {
		t.Errorf("%d target connections for %d requests from %d clients", first, workers*each, workers)
	}
	wave()
	if again := tg.newConns.Load() - first; again > 2 {
		t.Errorf("second wave of %d requests dialled %d new target connections; want them reused", workers*each, again)
	}
}

func TestLoopDetected(t *testing.T) {
	rt, _ := routeFromYAML(t, "svc", "authenticateURLsMatching: '^http://'", bearerPlugin, staticFetch(map[string]string{"token": "t"}))
	s, _ := startProxy(t, []Route{rt}, Options{})
	resp, err := proxyClient(s, nil).Get("http://" + s.Addr().String() + "/loop")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The proxy gets its own request back in origin form (400) or with its
	// Via token (508); either way it does not loop.
	if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusLoopDetected {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestShutdownWaitsForInFlight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	tg := newTarget(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "done")
	}))
	rt, _ := routeFromYAML(t, "svc", "authenticateURLsMatching: '^http://'", bearerPlugin, staticFetch(map[string]string{"token": "t"}))
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	s := New(l, []Route{rt}, nil, Options{})
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	c := proxyClient(s, nil)
	got := make(chan string, 1)
	go func() {
		resp, err := c.Get("http://" + tg.hostPort() + "/slow")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned during an in-flight request: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("listener still accepting during shutdown")
	}
	close(release)
	if b := <-got; b != "done" {
		t.Fatalf("in-flight request got %q", b)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestOriginFormRefused(t *testing.T) {
	rt, _ := routeFromYAML(t, "svc", "authenticateURLsMatching: '^http://'", bearerPlugin, staticFetch(map[string]string{"token": "t"}))
	s, _ := startProxy(t, []Route{rt}, Options{})
	resp, body := rawRequest(t, s.Addr().String(), "GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "absolute-form") {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
}

func TestShutdownAndWebSockets(t *testing.T) {
	ws := newTarget(t, nil, http.HandlerFunc(wsEchoHandler))
	rt, _ := routeFromYAML(t, "ws", "authenticateURLsMatching: '^http://'\nallowWebSockets: true", bearerPlugin, staticFetch(map[string]string{"token": "t"}))
	for _, tt := range []struct {
		name      string
		grace     time.Duration
		closeWS   bool
		wantErr   bool
		wsDropped bool
	}{
		{name: "waits for an open websocket", grace: 5 * time.Second, closeWS: true},
		{name: "closes it when the grace period ends", grace: 300 * time.Millisecond, wantErr: true, wsDropped: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := net.Listen("tcp", "127.0.0.1:0")
			s := New(l, []Route{rt}, nil, Options{})
			served := make(chan error, 1)
			go func() { served <- s.Serve() }()
			conn, br, resp := wsDial(t, l.Addr().String(), "http://"+ws.hostPort()+"/ws")
			defer conn.Close()
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d", resp.StatusCode)
			}
			wsWrite(t, conn, []byte("before"))
			if got := wsRead(t, br); string(got) != "before" {
				t.Fatalf("echo %q", got)
			}
			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), tt.grace)
				defer cancel()
				shut <- s.Shutdown(ctx)
			}()
			if tt.closeWS {
				time.Sleep(200 * time.Millisecond)
				select {
				case err := <-shut:
					t.Fatalf("Shutdown returned with a websocket open: %v", err)
				default:
				}
				wsWrite(t, conn, []byte("during"))
				if got := wsRead(t, br); string(got) != "during" {
					t.Fatalf("websocket broken during drain: %q", got)
				}
				conn.Close()
			}
			err := <-shut
			if (err != nil) != tt.wantErr {
				t.Fatalf("Shutdown err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wsDropped {
				_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := br.ReadByte(); err == nil {
					t.Fatal("websocket still open after the grace period")
				}
			}
			if err := <-served; err != nil {
				t.Fatalf("Serve: %v", err)
			}
		})
	}
}

// TestConsumedBodyNotReplayed: when the target drops the connection after
// reading a POST body, the proxy answers 502 instead of sending the body
// again.
func TestConsumedBodyNotReplayed(t *testing.T) {
	var posts atomic.Int64
	tg := newTarget(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			echoHandler(w, r)
			return
		}
		posts.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close() // no response at all
		}
	}))
	rt, _ := routeFromYAML(t, "svc", "authenticateURLsMatching: '^http://'", bearerPlugin, staticFetch(map[string]string{"token": "t"}))
	s, _ := startProxy(t, []Route{rt}, Options{})
	c := proxyClient(s, nil)
	// Warm a keep-alive connection first, so the POST goes over a reused one
	// (the case where the transport would consider retrying).
	req, _ := http.NewRequest(http.MethodGet, "http://"+tg.hostPort()+"/warm", nil)
	doEcho(t, c, req)
	body := io.MultiReader(strings.NewReader(strings.Repeat("p", 1<<16)))
	req, _ = http.NewRequest(http.MethodPost, "http://"+tg.hostPort()+"/once", body)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	if n := posts.Load(); n != 1 {
		t.Fatalf("target got the POST %d times, want once", n)
	}
}
