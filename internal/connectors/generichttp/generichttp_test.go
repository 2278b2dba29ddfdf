package generichttp

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
	sdklog "github.com/secretless-broker/secretless-broker/sdk/log"
)

type res struct{ cfg string }

func (r res) Config() []byte        { return []byte(r.cfg) }
func (r res) Logger() sdklog.Logger { return nil }

func TestValidateConfig(t *testing.T) {
	v := Plugin().(sdkhttp.Validator)
	tests := []struct {
		name    string
		block   string
		wantErr []string
	}{
		{name: "headers", block: "headers:\n  Authorization: 'token {{ .token }}'\n"},
		{name: "query params", block: "queryParams:\n  key: '{{ .k }}'\n"},
		{name: "oauth1 two-legged", block: "oauth1:\n  consumer_key: '{{ .ck }}'\n  consumer_secret: '{{ .cs }}'\n"},
		{name: "validations", block: "headers: {X-A: '{{ .a }}'}\ncredentialValidations:\n  a: '^[a-z]+$'\n"},
		{name: "empty", block: "", wantErr: []string{"set at least one of headers, queryParams or oauth1"}},
		{name: "unknown key", block: "headerz: {}\n", wantErr: []string{`config.headerz: unknown key; did you mean "headers"?`}},
		{name: "bad template", block: "headers:\n  X-A: '{{ .a '\n", wantErr: []string{"headers.X-A: invalid template"}},
		{name: "unknown function", block: "headers:\n  X-A: '{{ sha1 .a }}'\n", wantErr: []string{"headers.X-A: invalid template", "function \"sha1\" not defined"}},
		{name: "bad header name", block: "headers:\n  'X A': v\n", wantErr: []string{"headers.X A: invalid header name"}},
		{name: "managed header", block: "headers:\n  Host: v\n  Proxy-Authorization: v\n", wantErr: []string{"headers.Host: the proxy manages", "headers.Proxy-Authorization: the proxy manages"}},
		{name: "bad validation regex", block: "headers: {X-A: v}\ncredentialValidations:\n  a: '(['\n", wantErr: []string{"credentialValidations.a: invalid regex \"([\""}},
		{name: "oauth1 incomplete", block: "oauth1:\n  consumer_key: x\n  token: t\n", wantErr: []string{"oauth1.consumer_secret: required", "token and token_secret go together"}},
		{name: "oauth1 with Authorization header", block: "headers: {Authorization: x}\noauth1: {consumer_key: a, consumer_secret: b}\n", wantErr: []string{"remove headers.Authorization"}},
		{name: "oauth1 with lowercase authorization header", block: "headers: {authorization: x}\noauth1: {consumer_key: a, consumer_secret: b}\n", wantErr: []string{"remove headers.Authorization"}},
		{name: "one header in two cases", block: "headers:\n  Authorization: 'Bearer {{ .t }}'\n  authorization: placeholder\n",
			wantErr: []string{"headers.authorization: the same header as headers.Authorization (header names ignore case)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.ValidateConfig([]byte(tt.block))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestConnect(t *testing.T) {
	tests := []struct {
		name      string
		block     string
		creds     connector.CredentialValuesByID
		url       string
		clientHdr map[string]string
		wantHdr   map[string]string
		wantQuery string
		wantErr   string
	}{
		{name: "header replaces client's", block: "headers:\n  Authorization: 'token {{ .token }}'\n",
			creds: connector.CredentialValuesByID{"token": []byte("t1")}, clientHdr: map[string]string{"Authorization": "fake"},
			wantHdr: map[string]string{"Authorization": "token t1"}},
		{name: "base64 helper", block: "headers:\n  Authorization: 'Basic {{ base64 (printf \"%s:%s\" .u .p) }}'\n",
			creds: connector.CredentialValuesByID{"u": []byte("user"), "p": []byte("pass")}, wantHdr: map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}},
		{name: "query param replaced, rest kept", block: "queryParams:\n  key: '{{ .k }}'\n", url: "http://h/p?b=2&key=old&a=1",
			creds: connector.CredentialValuesByID{"k": []byte("a b&c")}, wantQuery: "b=2&a=1&key=a+b%26c"},
		{name: "missing credential", block: "headers:\n  X: '{{ .nope }}'\n", creds: connector.CredentialValuesByID{"token": []byte("secret-x")},
			wantErr: "map has no entry for key \"nope\""},
		{name: "validation fails", block: "headers: {X: '{{ .t }}'}\ncredentialValidations: {t: '^[0-9]+$'}\n",
			creds: connector.CredentialValuesByID{"t": []byte("not-digits-secret")}, wantErr: "credential t does not match its credentialValidations pattern"},
		{name: "validated credential missing", block: "headers: {X: v}\ncredentialValidations: {t: '.'}\n",
			creds: connector.CredentialValuesByID{}, wantErr: "credential t named in credentialValidations is missing"},
		{name: "header injection refused", block: "headers: {X: '{{ .t }}'}\n",
			creds: connector.CredentialValuesByID{"t": []byte("a\r\nX-Evil: 1")}, wantErr: "line break"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.url
			if u == "" {
				u = "http://h/p"
			}
			r, _ := http.NewRequest(http.MethodGet, u, nil)
			for k, v := range tt.clientHdr {
				r.Header.Set(k, v)
			}
			err := Plugin().NewConnector(res{tt.block}).Connect(r, tt.creds)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				for _, v := range tt.creds {
					if len(v) > 0 && strings.Contains(err.Error(), string(v)) {
						t.Errorf("error reveals a credential: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.wantHdr {
				if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("%s = %q, want [%q]", k, got, v)
				}
			}
			if tt.wantQuery != "" && r.URL.RawQuery != tt.wantQuery {
				t.Errorf("query %q, want %q", r.URL.RawQuery, tt.wantQuery)
			}
		})
	}
}

// TestOAuth1Vectors checks published HMAC-SHA1 examples: OAuth Core 1.0
// Appendix A.5 (query parameters) and Twitter's documented example (query
// plus form body).
func TestOAuth1Vectors(t *testing.T) {
	tests := []struct {
		name              string
		method, url, body string
		ck, cs, tok, ts   string
		nonce             string
		timestamp         int64
		wantSig           string
	}{
		{name: "OAuth Core 1.0 A.5", method: "GET", url: "http://photos.example.net/photos?file=vacation.jpg&size=original",
			ck: "dpf43f3p2l4k3l03", cs: "kd94hf93k423kf44", tok: "nnch734d00sl2jdk", ts: "pfkkdhi9sl3r4s00",
			nonce: "kllo9940pd9333jh", timestamp: 1191242096, wantSig: "tR3+Ty81lMeYAr/Fid0kMTYa/WM="},
		{name: "Twitter statuses/update", method: "POST", url: "https://api.twitter.com/1.1/statuses/update.json?include_entities=true",
			body: "status=Hello%20Ladies%20%2b%20Gentlemen%2c%20a%20signed%20OAuth%20request%21",
			ck:   "xvz1evFS4wEEPTGEFPHBog", cs: "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
			tok: "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb", ts: "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
			nonce: "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg", timestamp: 1318622958, wantSig: "hCtSmYh+iHYCEqBWrE7C7hYmtUk="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			r, _ := http.NewRequest(tt.method, tt.url, body)
			if tt.body != "" {
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			block := "oauth1:\n  consumer_key: '{{ .ck }}'\n  consumer_secret: '{{ .cs }}'\n  token: '{{ .tok }}'\n  token_secret: '{{ .ts }}'\n"
			c := Plugin().NewConnector(res{block}).(*genericConnector)
			c.oauth.now = func() time.Time { return time.Unix(tt.timestamp, 0) }
			c.oauth.nonce = func() string { return tt.nonce }
			creds := connector.CredentialValuesByID{"ck": []byte(tt.ck), "cs": []byte(tt.cs), "tok": []byte(tt.tok), "ts": []byte(tt.ts)}
			if err := c.Connect(r, creds); err != nil {
				t.Fatal(err)
			}
			auth := r.Header.Get("Authorization")
			if !strings.Contains(auth, `oauth_signature="`+url.QueryEscape(tt.wantSig)+`"`) {
				t.Errorf("Authorization %q lacks signature %q", auth, tt.wantSig)
			}
			for _, want := range []string{`oauth_consumer_key="` + tt.ck + `"`, `oauth_token="` + tt.tok + `"`, `oauth_signature_method="HMAC-SHA1"`, `oauth_version="1.0"`} {
				if !strings.Contains(auth, want) {
					t.Errorf("Authorization %q lacks %s", auth, want)
				}
			}
			if tt.body != "" {
				got, _ := io.ReadAll(r.Body)
				if string(got) != tt.body {
					t.Errorf("body not replayed: %q", got)
				}
			}
		})
	}
}

func TestReplaceQueryParams(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"", "k=v"},
		{"a=1", "a=1&k=v"},
		{"k=old", "k=v"},
		{"a=%2F&k=1&k=2&b", "a=%2F&b&k=v"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			if got := replaceQueryParams(tt.raw, [][2]string{{"k", "v"}}); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestOAuth1RequestErrors: a form body the signer cannot use is the
// client's fault, so the proxy must answer with a 4xx, not a 500.
func TestOAuth1RequestErrors(t *testing.T) {
	block := "oauth1:\n  consumer_key: '{{ .ck }}'\n  consumer_secret: '{{ .cs }}'\n"
	creds := connector.CredentialValuesByID{"ck": []byte("key-secret-1"), "cs": []byte("consumer-secret-2")}
	tests := []struct {
		name, url, body string
		hold            int64 // form budget taken by other requests
		wantStatus      int
		wantErr         string
	}{
		{name: "form body too large", url: "http://h/p", body: "a=" + strings.Repeat("x", maxFormBody),
			wantStatus: http.StatusRequestEntityTooLarge, wantErr: "larger than"},
		{name: "bad form encoding", url: "http://h/p", body: "a=%zz", wantStatus: http.StatusBadRequest, wantErr: "form body"},
		{name: "bad query encoding", url: "http://h/p?q=%zz", body: "a=1", wantStatus: http.StatusBadRequest, wantErr: "query"},
		{name: "form budget in use", url: "http://h/p", body: "a=1", hold: maxFormInFlight - 2,
			wantStatus: http.StatusServiceUnavailable, wantErr: "too many form bodies"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.hold > 0 {
				_, release, err := formBudget.ReadAll(strings.NewReader(strings.Repeat("x", int(tt.hold))), tt.hold)
				if err != nil {
					t.Fatal(err)
				}
				defer release()
			}
			r, _ := http.NewRequest(http.MethodPost, tt.url, strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			err := Plugin().NewConnector(res{block}).Connect(r, creds)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			var sc interface{ HTTPStatus() int }
			if !errors.As(err, &sc) || sc.HTTPStatus() != tt.wantStatus {
				t.Fatalf("err = %v carries no status %d", err, tt.wantStatus)
			}
			for _, v := range creds {
				if strings.Contains(err.Error(), string(v)) {
					t.Fatalf("error reveals a credential: %v", err)
				}
			}
		})
	}
}

// TestLineBreakInCredential: a credential that ends with a line break (a
// file written with echo) makes the request fail with a message that says
// so, and without the value.
func TestLineBreakInCredential(t *testing.T) {
	c := Plugin().NewConnector(res{"headers:\n  Authorization: 'Bearer {{ .token }}'\n"})
	r, _ := http.NewRequest(http.MethodGet, "http://h/p", nil)
	err := c.Connect(r, connector.CredentialValuesByID{"token": []byte("tok-Secret-9\n")})
	if err == nil || !strings.Contains(err.Error(), "credential token ends with a line break") || strings.Contains(err.Error(), "tok-Secret-9") {
		t.Fatalf("err = %v", err)
	}
}
