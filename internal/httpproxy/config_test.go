package httpproxy

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/connkeys"
)

func TestParseConfig(t *testing.T) {
	ca := newTestCA(t, "ca")
	caFile, keyFile := ca.files(t)
	notPEM := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(notPEM, []byte("nothing here"), 0o600); err != nil {
		t.Fatal(err)
	}
	leafFile := filepath.Join(t.TempDir(), "leaf.pem")
	expiredCert, expiredKey := newTestCAWith(t, "expired", func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	}).files(t)
	futureCert, futureKey := newTestCAWith(t, "future", func(c *x509.Certificate) { c.NotBefore = time.Now().Add(24 * time.Hour) }).files(t)
	noSignCert, noSignKey := newTestCAWith(t, "nosign", func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }).files(t)
	intercept := func(c, k string) string {
		return "authenticateURLsMatching: ^https\ninterceptConnect:\n  caCert: " + c + "\n  caKey: " + k
	}
	tests := []struct {
		name     string
		block    string
		wantErr  []string // substrings, each must appear
		wantRest string   // expected remainder (YAML), "" for nil
		check    func(t *testing.T, c *Config)
	}{
		{name: "single pattern string", block: "authenticateURLsMatching: ^http://api\\.example\\.com/",
			check: func(t *testing.T, c *Config) {
				if len(c.Match) != 1 || !c.Match[0].MatchString("http://api.example.com/x") {
					t.Errorf("patterns %v", c.Match)
				}
			}},
		{name: "list and connector keys passed on", block: "authenticateURLsMatching:\n  - ^http\n  - ^https\nforceSSL: true\nheaders:\n  X-A: '{{ .a }}'\n",
			wantRest: "headers:\n    X-A: '{{ .a }}'\n",
			check: func(t *testing.T, c *Config) {
				if len(c.Match) != 2 || !c.ForceSSL {
					t.Errorf("got %+v", c)
				}
			}},
		{name: "timeouts", block: "authenticateURLsMatching: ^http\ntimeouts:\n  dial: 2s\n  request: 0\n  responseHeader: 1m\n",
			check: func(t *testing.T, c *Config) {
				if c.Timeouts.Dial != 2*time.Second || c.Timeouts.ResponseHeader != time.Minute || c.Timeouts.Request != 0 {
					t.Errorf("timeouts %+v", c.Timeouts)
				}
			}},
		{name: "caBundle", block: "authenticateURLsMatching: ^http\ncaBundle: " + caFile,
			check: func(t *testing.T, c *Config) {
				if c.RootCAs == nil || c.CABundle != caFile {
					t.Errorf("bundle not loaded")
				}
			}},
		{name: "interceptConnect", block: "authenticateURLsMatching: ^https\ninterceptConnect:\n  caCert: " + caFile + "\n  caKey: " + keyFile,
			check: func(t *testing.T, c *Config) {
				if c.Intercept == nil || c.Intercept.Cert.Leaf == nil {
					t.Errorf("intercept CA not loaded")
				}
			}},
		{name: "missing block", block: "", wantErr: []string{"authenticateURLsMatching: required"}},
		{name: "missing patterns", block: "forceSSL: true", wantErr: []string{"authenticateURLsMatching: required"}},
		{name: "invalid regex", block: "authenticateURLsMatching: ['^ok', '(unclosed']",
			wantErr: []string{"authenticateURLsMatching[1]: invalid regex \"(unclosed\": missing closing )"}},
		{name: "empty pattern", block: "authenticateURLsMatching: ['']", wantErr: []string{"authenticateURLsMatching[0]: empty pattern"}},
		{name: "empty list", block: "authenticateURLsMatching: []", wantErr: []string{"authenticateURLsMatching: must list at least one pattern"}},
		{name: "mapping instead of patterns", block: "authenticateURLsMatching: {a: b}", wantErr: []string{"authenticateURLsMatching: must be a regular expression or a list"}},
		{name: "bad bool", block: "authenticateURLsMatching: ^http\nforceSSL: maybe", wantErr: []string{"forceSSL: must be true or false, not \"maybe\""}},
		{name: "bad timeout", block: "authenticateURLsMatching: ^http\ntimeouts:\n  dial: soon\n  nap: 1s",
			wantErr: []string{"timeouts.dial: invalid duration \"soon\"", "timeouts.nap: unknown timeout"}},
		{name: "missing caBundle file", block: "authenticateURLsMatching: ^http\ncaBundle: /nonexistent/ca.pem", wantErr: []string{"caBundle: open /nonexistent/ca.pem"}},
		{name: "caBundle without PEM", block: "authenticateURLsMatching: ^http\ncaBundle: " + notPEM, wantErr: []string{"caBundle: " + notPEM + " holds no PEM certificate"}},
		{name: "interceptConnect with an expired CA", block: intercept(expiredCert, expiredKey),
			wantErr: []string{"interceptConnect.caCert: " + expiredCert + " expired on "}},
		{name: "interceptConnect with a CA not valid yet", block: intercept(futureCert, futureKey),
			wantErr: []string{"interceptConnect.caCert: " + futureCert + " is not valid before "}},
		{name: "interceptConnect with a CA that may not sign", block: intercept(noSignCert, noSignKey),
			wantErr: []string{"interceptConnect.caCert: " + noSignCert + " may not sign certificates"}},
		{name: "interceptConnect incomplete", block: "authenticateURLsMatching: ^http\ninterceptConnect:\n  caCert: x\n  extra: 1",
			wantErr: []string{"interceptConnect.extra: unknown key", "interceptConnect.caKey: required"}},
		{name: "interceptConnect with a missing file", block: "authenticateURLsMatching: ^http\ninterceptConnect:\n  caCert: " + leafFile + "\n  caKey: " + keyFile,
			wantErr: []string{"interceptConnect: load CA: open " + leafFile}},
		{name: "every problem reported", block: "authenticateURLsMatching: '('\nforceSSL: 3",
			wantErr: []string{"authenticateURLsMatching: invalid regex", "forceSSL: must be true or false"}},
		{name: "not a mapping", block: "- a", wantErr: []string{"config: must be a mapping"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, rest, err := ParseConfig([]byte(tt.block))
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(rest) != tt.wantRest {
				t.Errorf("rest = %q, want %q", rest, tt.wantRest)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestListenerOptions(t *testing.T) {
	ca1, ca2 := newTestCA(t, "one"), newTestCA(t, "two")
	c1, k1 := ca1.files(t)
	c2, k2 := ca2.files(t)
	parse := func(block string) *Config {
		c, _, err := ParseConfig([]byte(block))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := parse("authenticateURLsMatching: ^a\ninterceptConnect: {caCert: " + c1 + ", caKey: " + k1 + "}")
	b := parse("authenticateURLsMatching: ^b\npassthroughUnmatched: true")
	d := parse("authenticateURLsMatching: ^d\ninterceptConnect: {caCert: " + c2 + ", caKey: " + k2 + "}")
	o, err := ListenerOptions(a, b)
	if err != nil || o.Intercept == nil || !o.PassthroughUnmatched {
		t.Fatalf("merge: %+v %v", o, err)
	}
	if _, err := ListenerOptions(a, d); err == nil || !strings.Contains(err.Error(), "interceptConnect: services sharing a listenOn address name different CAs") {
		t.Fatalf("conflict err = %v", err)
	}
}

func TestLoosePattern(t *testing.T) {
	tests := []struct {
		pattern string
		loose   bool
	}{
		{`^https://api\.example\.com/`, false},
		{`^http://127\.0\.0\.1:`, false},
		{`^https?://api\.x\.com(/|$)`, false},
		{`^https://api\.example\.com$`, false},
		{`^(http|https)://h/`, false},
		{`http://127\.0\.0\.1:56610/`, true},
		{`^https://api\.example\.com`, true},
		{`api\.example\.com`, true},
		{`.*`, true},
		{`(?i)^http://api\.example\.com/`, false},
		{`^https://\[::1\]:8443/`, false},
		{`^http://localhost(:[0-9]+)?/`, false},
		{`^http://localhost(:[0-9]+)?`, true},
		{`^http://.*\.example\.com/`, true},
		{`^http://api.example.com/`, true},
		{`^http://api\.example\.com|^http://other\.com/`, true},
		{`^http://a\.com/|^http://b\.com/`, false},
		{`^http://[^/]+/ws`, true},
		{`^http://jenkins\.internal/`, false},
		{`^http://([a-z0-9-]+\.)*s3([.-][a-z0-9-]+)*\.amazonaws\.com(:[0-9]+)?/`, false},
		{`^https?://([a-z0-9-]+\.)*amazonaws\.com(:[0-9]+)?/`, false},
		{`^https?://[a-z]+amazonaws\.com/`, true},
		{`^http://127\.0\.0\.1:17312/`, false},
		{`^http://[a-z]+\.example\.com/`, false},
		{`^http://[a-z]+/`, true},
		{`^http://api[-.]?\.example\.com/`, false},
		{`^http://127\.0\.0\.1:4901/?`, true},
		{`^https?://api\.example\.com/*`, true},
		{`^https?://api\.example\.com/{0,1}`, true},
		{`^https?://api\.example\.com(/|$)?`, true},
		{`^http://api\.example\.com/+`, false},
		{`^https?://\S+\.example\.com/`, true},
		{`^https?://\W*api\.example\.com/`, true},
		{`^https?://[\w.:/?=-]+\.example\.org/`, true},
		{`^https?://[!-~]+\.example\.org/`, true},
		{`^https?://\PL+\.example\.org/`, true},
		{`^https?://[\w-]+\.example\.com/`, false},
		{`^https?://(\w+\.)*example\.com/`, false},
		{`^(http://api\.example\.com/|.*)`, true},
		{`^(http://api\.example\.com/|http://localhost)`, true},
		{`^(https://api\.example\.com/|https://api\.example\.org)`, true},
		{`^(?:https://a\.example\.com/|https://b\.example\.com/)`, false},
		{`^(https://api\.example\.com/)?`, true},
		{`^https://api\.example\.com/\Q(\E|.*`, true},
		{`^https://api\.example\.com/\Q[\E|.*`, true},
		{`^https://(evil|[a-z]+\.)*example\.com/`, true},
		{`^https://(api|[a-z0-9-]+\.)?example\.com/`, true},
		{`^https://(a|b|\.)+example\.com/`, true},
		{`^https://(a\.|b\.)*example\.com/`, false},
		{`^https://([a-z0-9-]+\.)*example\.com(:[0-9]+)?/`, false},
		{`^http://(api|[a|b]x)\.example\.com/`, false},
		// The same patterns spelt another way are judged the same.
		{`(?i)^HTTP://api\.x\.com/`, false},
		{`(?i)^HTTPS?://api\.x\.com/`, false},
		{`^http(s)?://api\.x\.com/`, false},
		{`^http(?:s)?://api\.x\.com/`, false},
		{`^http:\/\/api\.x\.com\/`, false},
		{`^http://api\.x\.com\z`, false},
		{`^http://api[.]x[.]com/`, false},
		{`^http://api\x2ex\.com/`, false},
		{`^http://api\.x\.com\x2f`, false},
		{`(?i)^HTTP://api\.x\.com`, true},
		{`^http(s)?://api.x\.com/`, true},
		{`^http://api[.]x[.]com\/?`, true},
		{`^http://api\.x\.com\Q\/\E`, true},
	}
	for _, tc := range tests {
		t.Run(tc.pattern, func(t *testing.T) {
			if got := LoosePattern(tc.pattern) != ""; got != tc.loose {
				t.Errorf("LoosePattern(%q) = %q, want loose %v", tc.pattern, LoosePattern(tc.pattern), tc.loose)
			}
		})
	}
}

// TestProxyKeysShared: the list of proxy keys that connectors' key checks
// use is the proxy's own.
func TestProxyKeysShared(t *testing.T) {
	if strings.Join(connkeys.ProxyKeys, ",") != strings.Join(proxyKeys, ",") {
		t.Fatalf("connkeys.ProxyKeys %v, proxy keys %v", connkeys.ProxyKeys, proxyKeys)
	}
}

// TestProxyKeyTypo: a typo of a proxy key is reported as such, and the key
// meant is not also reported missing.
func TestProxyKeyTypo(t *testing.T) {
	_, _, err := ParseConfig([]byte("authenticateURLMatching: ^http://a\\.b/\nforcessl: true\n"))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`authenticateURLMatching: unknown key; did you mean "authenticateURLsMatching"?`, `forcessl: unknown key; did you mean "forceSSL"?`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "required") {
		t.Errorf("the key meant is reported missing too:\n%v", err)
	}
}
