package httpproxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/internal/connectors/basicauth"
	"github.com/secretless-broker/secretless-broker/internal/connectors/generichttp"
)

// curl runs curl through the proxy and returns its stdout.
func curl(t *testing.T, proxyAddr string, args ...string) []byte {
	t.Helper()
	bin := requireTool(t, "curl")
	full := append([]string{"-sS", "--fail-with-body", "--max-time", "30", "-x", "http://" + proxyAddr}, args...)
	cmd := exec.Command(bin, full...)
	// curl honours these; the test passes -x explicitly and wants no other proxy.
	cmd.Env = append(os.Environ(), "http_proxy=", "https_proxy=", "HTTPS_PROXY=", "no_proxy=", "NO_PROXY=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl %s: %v\nstdout %s\nstderr %s", strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

func TestCurlThroughProxy(t *testing.T) {
	ca := newTestCA(t, "target CA")
	caFile, _ := ca.files(t)
	plain := newTarget(t, nil, nil)
	secure := newTarget(t, ca, nil)
	basic, _ := routeFromYAML(t, "basic", "authenticateURLsMatching: '^http://[^/]+/basic'\nforceSSL: true\ncaBundle: "+caFile,
		basicauth.Plugin(), staticFetch(map[string]string{"username": "carol", "password": "pa:ss word"}))
	generic, _ := routeFromYAML(t, "generic", "authenticateURLsMatching: '^http://[^/]+/generic'\nheaders:\n  X-Api-Key: '{{ .key }}'\n",
		generichttp.Plugin(), staticFetch(map[string]string{"key": "k-42"}))
	s, _ := startProxy(t, []Route{basic, generic}, Options{})
	addr := s.Addr().String()
	decode := func(t *testing.T, b []byte) echoed {
		var e echoed
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
		return e
	}

	t.Run("basic_auth over forceSSL replaces curl's -u", func(t *testing.T) {
		e := decode(t, curl(t, addr, "-u", "fake:fake", "http://"+secure.hostPort()+"/basic/x"))
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte("carol:pa:ss word"))
		if got := e.Header["Authorization"]; len(got) != 1 || got[0] != want || !e.TLS {
			t.Fatalf("Authorization %q tls %v", got, e.TLS)
		}
	})
	t.Run("generic_http header", func(t *testing.T) {
		e := decode(t, curl(t, addr, "-H", "X-Api-Key: mine", "http://"+plain.hostPort()+"/generic/y"))
		if got := e.Header["X-Api-Key"]; len(got) != 1 || got[0] != "k-42" {
			t.Fatalf("X-Api-Key %q", got)
		}
	})
	t.Run("5 MB chunked upload", func(t *testing.T) {
		data := make([]byte, 5<<20)
		_, _ = rand.Read(data)
		f := filepath.Join(t.TempDir(), "up.bin")
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		e := decode(t, curl(t, addr, "-X", "PUT", "-H", "Transfer-Encoding: chunked", "--data-binary", "@"+f, "http://"+plain.hostPort()+"/generic/up"))
		sum := sha256.Sum256(data)
		if e.BodySHA256 != hex.EncodeToString(sum[:]) || e.BodyLen != int64(len(data)) || len(e.TransferEncoding) == 0 {
			t.Fatalf("target got %d bytes sha %s te %q", e.BodyLen, e.BodySHA256, e.TransferEncoding)
		}
	})
	t.Run("empty POST", func(t *testing.T) {
		e := decode(t, curl(t, addr, "-X", "POST", "-H", "Content-Length: 0", "http://"+plain.hostPort()+"/generic/empty"))
		if e.BodyLen != 0 || e.ContentLength != 0 || e.Header.Get("Content-Length") != "0" {
			t.Fatalf("target saw %+v", e)
		}
	})
	refused := func(t *testing.T, want string, args ...string) {
		t.Helper()
		bin := requireTool(t, "curl")
		cmd := exec.Command(bin, append([]string{"-s", "-x", "http://" + addr, "-o", "/dev/null", "-w", "%{http_code}"}, args...)...)
		cmd.Env = append(os.Environ(), "http_proxy=", "https_proxy=", "HTTPS_PROXY=", "no_proxy=", "NO_PROXY=")
		out, _ := cmd.Output()
		if string(out) != want {
			t.Fatalf("curl %q: status %s, want %s", args, out, want)
		}
	}
	for _, tc := range []struct{ name, path string }{
		{"dot dot segment", "/generic/../admin"},
		{"encoded dot dot segment", "/generic/%2e%2e/admin"},
		{"dot dot behind an encoded slash", "/generic/..%2Fadmin"},
		{"dot segment", "/generic/./x"},
		{"backslash separator", "/generic\\..\\admin"},
		{"dot dot with a path parameter", "/generic/..;/admin"},
		{"encoded dot dot with a path parameter", "/generic/%2e%2e;x=1/admin"},
		{"double-encoded dot dot", "/generic/%252e%252e/admin"},
		{"double-encoded slash", "/generic/..%252fadmin"},
		{"dot dot and a NUL", "/generic/..%00/admin"},
		{"dot dot and a space", "/generic/..%20/admin"},
		{"double encoding with encoded hex digits", "/generic/%25%32%65%25%32%65/admin"},
		{"dot dot and a vertical tab", "/generic/..%0b/admin"},
		{"a space before dot dot", "/generic/%20../admin"},
		{"overlong utf-8 dots", "/generic/%c0%ae%c0%ae/admin"},
		{"fullwidth dots", "/generic/%ef%bc%8e%ef%bc%8e/admin"},
		{"double encoding behind a stray percent", "/generic/%252e%252e/x%25zz"},
		{"triple encoding behind a stray percent", "/generic/%25252e%25252e/x%2525zz"},
		{"two dot leader", "/generic/%E2%80%A5/admin"},
		{"one dot leaders", "/generic/%E2%80%A4%E2%80%A4/admin"},
		{"small full stops", "/generic/%EF%B9%92%EF%B9%92/admin"},
		{"fullwidth reverse solidus", "/generic/..%EF%BC%BCadmin"},
		{"small reverse solidus", "/generic/..%EF%B9%A8admin"},
		{"fullwidth solidus", "/generic/..%EF%BC%8Fadmin"},
		{"overlong slash", "/generic/..%c0%afadmin"},
		{"dot dot before an encoded question mark", "/generic/%2e%2e%3fx=1"},
		{"dot dot before an encoded hash", "/generic/..%23x"},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			refused(t, "400", "--path-as-is", "http://"+plain.hostPort()+tc.path)
		})
	}
	t.Run("dots inside a segment pass", func(t *testing.T) {
		e := decode(t, curl(t, addr, "http://"+plain.hostPort()+"/generic/a..b/.x"))
		if e.URI != "/generic/a..b/.x" {
			t.Fatalf("target saw %q", e.URI)
		}
	})
	t.Run("a stray percent and leaders inside a segment pass", func(t *testing.T) {
		e := decode(t, curl(t, addr, "http://"+plain.hostPort()+"/generic/100%25zz/a%E2%80%A5b"))
		if e.URI != "/generic/100%25zz/a%E2%80%A5b" {
			t.Fatalf("target saw %q", e.URI)
		}
	})
	for _, m := range []string{"TRACE", "TRACK", "trace", "Track"} {
		t.Run("refused: "+m, func(t *testing.T) {
			refused(t, "405", "-X", m, "http://"+plain.hostPort()+"/generic/t")
		})
	}
	t.Run("unmatched refused", func(t *testing.T) {
		bin := requireTool(t, "curl")
		cmd := exec.Command(bin, "-s", "-x", "http://"+addr, "-o", "/dev/stderr", "-w", "%{http_code}", "http://"+plain.hostPort()+"/other")
		cmd.Env = append(os.Environ(), "http_proxy=", "https_proxy=", "HTTPS_PROXY=", "no_proxy=", "NO_PROXY=")
		out, _ := cmd.Output()
		if string(out) != "403" {
			t.Fatalf("status %s", out)
		}
	})
	t.Run("https URL gets the CONNECT refusal", func(t *testing.T) {
		bin := requireTool(t, "curl")
		cmd := exec.Command(bin, "-sS", "-v", "-x", "http://"+addr, "https://"+secure.hostPort()+"/basic")
		cmd.Env = append(os.Environ(), "http_proxy=", "https_proxy=", "HTTPS_PROXY=", "no_proxy=", "NO_PROXY=")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "405 CONNECT refused: send http:// URLs") {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
	})
}

func TestDebugLogHoldsNoSecrets(t *testing.T) {
	secrets := map[string]string{"username": "dave", "password": "pw-SECRET-1", "token": "tok-SECRET-2",
		"consumer_key": "ck-SECRET-3", "consumer_secret": "cs-SECRET-4", "api_key": "key-SECRET-5"}
	tg := newTarget(t, nil, nil)
	basic, _ := routeFromYAML(t, "basic", "authenticateURLsMatching: '/basic'", basicauth.Plugin(), staticFetch(secrets))
	generic, _ := routeFromYAML(t, "generic", "authenticateURLsMatching: '/generic'\nheaders:\n  X-T: '{{ .token }}'\nqueryParams:\n  key: '{{ .api_key }}'\n",
		generichttp.Plugin(), staticFetch(secrets))
	oauth, _ := routeFromYAML(t, "oauth", "authenticateURLsMatching: '/oauth'\noauth1:\n  consumer_key: '{{ .consumer_key }}'\n  consumer_secret: '{{ .consumer_secret }}'\n",
		generichttp.Plugin(), staticFetch(secrets))
	broken, _ := routeFromYAML(t, "broken", "authenticateURLsMatching: '/broken'\nheaders:\n  X-T: '{{ .missing }}'\n",
		generichttp.Plugin(), staticFetch(secrets))
	s, logs := startProxy(t, []Route{basic, generic, oauth, broken}, Options{})
	c := proxyClient(s, nil)
	for _, p := range []string{"/basic", "/generic?x=1", "/oauth?y=2", "/broken"} {
		resp, err := c.Get("http://" + tg.hostPort() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := c.Get("http://127.0.0.1:1/generic?z=3") // unreachable target, with the key in the query
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	out := logs.String()
	if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "request proxied") {
		t.Fatalf("debug logging not on:\n%s", out)
	}
	for name, v := range secrets {
		if name == "username" {
			continue
		}
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), strings.ReplaceAll(v, "-", "%2D")} {
			if strings.Contains(out, form) {
				t.Errorf("log contains %s (%q):\n%s", name, form, out)
			}
		}
	}
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("unreachable target: status %d", resp.StatusCode)
	}
}
