package broker

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// whoami answers with the Authorization header it received.
func whoami(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Host+" "+strings.Join(r.Header.Values("Authorization"), "|"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func httpSvc(name, addr, pattern, userEnv string) string {
	return "  " + name + ":\n    connector: basic_auth\n    listenOn: tcp://" + addr + "\n    credentials:\n      username:\n        from: env\n        get: " + userEnv +
		"\n      password: pw-" + name + "\n    config:\n      authenticateURLsMatching: " + pattern + "\n"
}

func proxyGet(t *testing.T, proxyAddr, target string) (int, string) {
	t.Helper()
	pu, _ := url.Parse("http://" + proxyAddr)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: 5 * time.Second}
	req, _ := http.NewRequest("GET", target, nil)
	req.Header.Set("Authorization", "Basic client-sent")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTPServicesShareAListener(t *testing.T) {
	a, b := whoami(t), whoami(t)
	addr := freeAddr(t)
	t.Setenv("USER_A", "alice")
	t.Setenv("USER_B", "bob")
	// Two HTTP services on one address, routed by URL.
	cfg := "version: 2\nservices:\n" + httpSvc("a", addr, "^"+a.URL, "USER_A") + httpSvc("b", addr, "^"+b.URL, "USER_B")
	r := start(t, cfg)
	basic := func(u, p string) string {
		req, _ := http.NewRequest("GET", "http://x", nil)
		req.SetBasicAuth(u, p)
		return req.Header.Get("Authorization")
	}
	tests := []struct {
		name     string
		target   string
		wantCode int
		wantBody string
	}{
		{"service a", a.URL + "/x", 200, strings.TrimPrefix(a.URL, "http://") + " " + basic("alice", "pw-a")},
		{"service b", b.URL + "/y", 200, strings.TrimPrefix(b.URL, "http://") + " " + basic("bob", "pw-b")},
		{"unmatched is refused", "http://127.0.0.1:1/", 403, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := proxyGet(t, addr, tt.target)
			if code != tt.wantCode || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("got %d %q, want %d %q", code, body, tt.wantCode, tt.wantBody)
			}
		})
	}

	t.Run("metrics count requests per service and code", func(t *testing.T) {
		m := r.b.Metrics().HTTPRequests
		if v := testutil.ToFloat64(m.WithLabelValues("a", "200")); v != 1 {
			t.Errorf("a 200 = %v", v)
		}
		if v := testutil.ToFloat64(m.WithLabelValues("(unmatched)", "403")); v != 1 {
			t.Errorf("unmatched 403 = %v", v)
		}
	})

	t.Run("reload changes one service", func(t *testing.T) {
		t.Setenv("USER_C", "carol")
		r.rewrite(t, "version: 2\nservices:\n"+httpSvc("a", addr, "^"+a.URL, "USER_C")+httpSvc("b", addr, "^"+b.URL, "USER_B"))
		if err := r.b.Reload(); err != nil {
			t.Fatal(err)
		}
		if _, body := proxyGet(t, addr, a.URL+"/x"); !strings.Contains(body, basic("carol", "pw-a")) {
			t.Fatalf("after reload a got %q", body)
		}
		if _, body := proxyGet(t, addr, b.URL+"/x"); !strings.Contains(body, basic("bob", "pw-b")) {
			t.Fatalf("after reload b got %q", body)
		}
		if v := testutil.ToFloat64(r.b.Metrics().Reloads.WithLabelValues("ok")); v != 1 {
			t.Errorf("ok reloads = %v", v)
		}
	})
}

func TestHTTPConfigErrorsAtLoad(t *testing.T) {
	for _, v := range []string{"X", "U", "K", "T"} {
		t.Setenv(v, "set")
	}
	tests := []struct {
		name string
		cfg  string
		want string
	}{
		{"bad regex", "version: 2\nservices:\n  h:\n    connector: basic_auth\n    listenOn: tcp://127.0.0.1:1\n    config:\n      authenticateURLsMatching: \"(\"\n",
			"s.yml:7: services.h.config.authenticateURLsMatching"},
		{"proxy key with its line", "version: 2\nservices:\n  h:\n    connector: basic_auth\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      username: u\n      password: p\n    config:\n      authenticateURLsMatching: x\n      timeouts:\n        dial: soon\n",
			"s.yml:12: services.h.config.timeouts.dial"},
		{"missing patterns", "version: 2\nservices:\n  h:\n    connector: basic_auth\n    listenOn: tcp://127.0.0.1:1\n",
			"services.h.config"},
		{"pg without username", "version: 2\nservices:\n  d:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      host: h\n      password: {from: env, get: X}\n",
			`services.d.credentials: rejected by connector "pg": pg: invalid configuration: credential username: missing`},
		{"pg literal sslmode typo", "version: 2\nservices:\n  d:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      host: h\n      username: u\n      sslmode: requir\n",
			`s.yml:9: services.d.credentials.sslmode: rejected by connector "pg": must be one of`},
		{"pg literal port out of range", "version: 2\nservices:\n  d:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      host: h\n      username: {from: env, get: U}\n      port: 99999\n",
			`s.yml:9: services.d.credentials.port: rejected by connector "pg": not a port number`},
		{"pg sslcert without sslkey", "version: 2\nservices:\n  d:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      host: h\n      username: u\n      sslcert: {from: file, get: CERTFILE}\n",
			`credential sslkey: missing (sslcert is set)`},
		{"basic_auth without password", "version: 2\nservices:\n  h:\n    connector: basic_auth\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      username: u\n    config:\n      authenticateURLsMatching: x\n",
			`services.h.credentials: rejected by connector "basic_auth": basic_auth: credential password is missing`},
		{"aws without secret", "version: 2\nservices:\n  h:\n    connector: aws\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      accessKeyId: {from: env, get: K}\n    config:\n      authenticateURLsMatching: x\n",
			`aws: credential secretAccessKey is missing`},
		{"generic_http template typo", "version: 2\nservices:\n  h:\n    connector: generic_http\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      token: {from: env, get: T}\n    config:\n      authenticateURLsMatching: x\n      headers:\n        Authorization: 'token {{ .tokn }}'\n",
			`s.yml:11: services.h.config.headers.Authorization: rejected by connector "generic_http": refers to a credential the service does not declare (it has: token)`},
		{"pg config key with its line", "version: 2\nservices:\n  d:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      host: h\n      username: u\n    config:\n      tls:\n        cert: /x\n        mode: bogus\n",
			`s.yml:12: services.d.config.tls.mode: rejected by connector "pg": unknown key; known keys here:`},
		{"generic_http config key with its line", "version: 2\nservices:\n  h:\n    connector: generic_http\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      token: t\n    config:\n      authenticateURLsMatching: x\n      headers:\n        Authorization: '{{ .token'\n",
			`s.yml:11: services.h.config.headers.Authorization: rejected by connector "generic_http":`},
		{"tcp limits on an http service", "version: 2\nservices:\n  h:\n    connector: basic_auth\n    listenOn: tcp://127.0.0.1:1\n    maxConnections: 1\n    credentials:\n      username: u\n      password: p\n    config:\n      authenticateURLsMatching: x\n",
			`s.yml:6: services.h.maxConnections: applies to TCP services only`},
		{"env variable not set", "version: 2\nservices:\n  d:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      host: h\n      username: u\n      password: {from: env, get: SECRETLESS_TEST_UNSET_VAR}\n",
			`s.yml:9: services.d.credentials.password: from env: environment variable is not set: SECRETLESS_TEST_UNSET_VAR`},
		{"credential file missing", "version: 2\nservices:\n  d:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      host: h\n      username: u\n      password: {from: file, get: /nonexistent/pw}\n",
			`s.yml:9: services.d.credentials.password: from file: read /nonexistent/pw: no such file or directory`},
		{"credential file is a directory", "version: 2\nservices:\n  d:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      host: h\n      username: u\n      password: {from: file, get: /}\n",
			`services.d.credentials.password: from file: read /: not a regular file`},
		{"tcp and http on one address", "version: 2\nservices:\n  h:\n    connector: basic_auth\n    listenOn: tcp://127.0.0.1:7\n    config:\n      authenticateURLsMatching: x\n  p:\n    connector: pg\n    listenOn: tcp://127.0.0.1:7\n",
			"services.p.listenOn: address tcp://127.0.0.1:7 is also used by service \"h\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file, cert := filepath.Join(dir, "s.yml"), filepath.Join(dir, "cert.pem")
			if err := os.WriteFile(cert, []byte("fetched per connection"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(strings.ReplaceAll(tt.cfg, "CERTFILE", cert)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Prepare(Options{ConfigFile: file, PluginDir: t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestEveryHTTPConfigProblemReported: several problems under one key of an
// HTTP service's config block are each reported, with their own paths.
func TestEveryHTTPConfigProblemReported(t *testing.T) {
	file := filepath.Join(t.TempDir(), "s.yml")
	cfg := "version: 2\nservices:\n  g:\n    connector: generic_http\n    listenOn: tcp://127.0.0.1:18181\n    credentials:\n      token: abcdefgh\n" +
		"    config:\n      authenticateURLsMatching: [\"(\", \"[\"]\n      timeouts: {dial: 5, foo: 1s}\n      query_params: {}\n      headers:\n        Authorization: 'Bearer {{ .token }}'\n"
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	err = CheckConnectors(c, reg, nil, false)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"authenticateURLsMatching[0]: invalid regex", "authenticateURLsMatching[1]: invalid regex",
		"timeouts.dial: invalid duration", "timeouts.foo: unknown timeout",
		`s.yml:11: services.g.config.query_params: rejected by connector "generic_http": unknown key; did you mean "queryParams"?`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
