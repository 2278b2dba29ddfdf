package connectortest_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
	"github.com/secretless-broker/secretless-broker/sdk/connectortest"
)

func httpPlugin(connect func(*http.Request, connector.CredentialValuesByID) error) sdkhttp.Plugin {
	return sdkhttp.PluginFunc(func(connector.Resources) sdkhttp.Connector { return sdkhttp.ConnectorFunc(connect) })
}

// bearer sets Authorization from the token credential.
var bearer = httpPlugin(func(r *http.Request, c connector.CredentialValuesByID) error {
	if len(c["token"]) == 0 {
		return errors.New("token missing")
	}
	r.Header.Set("Authorization", "Bearer "+string(c["token"]))
	return nil
})

// echoAuth is a target that answers with the Authorization header and body
// it received.
func echoAuth(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s|%s", r.Header.Get("Authorization"), body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// lastRequestKeeper remembers the request of the previous call and changes
// it on the next one.
type lastRequestKeeper struct {
	mu   sync.Mutex
	last *http.Request
}

func (k *lastRequestKeeper) Connect(r *http.Request, c connector.CredentialValuesByID) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.last != nil {
		k.last.Header.Set("X-Touched", "yes")
	}
	k.last = r
	r.Header.Set("Authorization", "Bearer "+string(c["token"]))
	return nil
}

func TestHTTPDo(t *testing.T) {
	srv := echoAuth(t)
	tests := []struct {
		name       string
		plugin     sdkhttp.Plugin
		clientAuth string
		body       string
		want       string // response body; "" means an error is wanted
		wantErr    string
		wantReport string
	}{
		{name: "sets header", plugin: bearer, want: "Bearer tok-1234|"},
		{name: "replaces client header", plugin: bearer, clientAuth: "Bearer fake", want: "Bearer tok-1234|"},
		{name: "returned error", plugin: httpPlugin(func(*http.Request, connector.CredentialValuesByID) error { return errors.New("no can do") }),
			wantErr: "no can do"},
		{name: "panic", plugin: httpPlugin(func(*http.Request, connector.CredentialValuesByID) error { panic("boom") }),
			wantErr: "Connect panicked: boom", wantReport: "Connect panicked: boom"},
		{name: "secret in error", plugin: httpPlugin(func(_ *http.Request, c connector.CredentialValuesByID) error {
			return fmt.Errorf("token %s refused", c["token"])
		}), wantErr: "refused", wantReport: "the error Connect returned contains the value of credential(s) token"},
		{name: "two authorization headers", plugin: httpPlugin(func(r *http.Request, c connector.CredentialValuesByID) error {
			r.Header.Add("Authorization", "Bearer "+string(c["token"]))
			return nil
		}), clientAuth: "Bearer fake", wantErr: "2 Authorization headers", wantReport: "left 2 Authorization headers"},
		{name: "target URL removed", plugin: httpPlugin(func(r *http.Request, _ connector.CredentialValuesByID) error {
			r.URL.Host = ""
			return nil
		}), wantErr: "target URL removed", wantReport: "removed the target URL"},
		{name: "body built from the credential slice sends zeros", plugin: httpPlugin(func(r *http.Request, c connector.CredentialValuesByID) error {
			b := c["token"] // kept past Connect: zeroed before the request is sent
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			return nil
		}), want: "|" + strings.Repeat("\x00", len("tok-1234"))},
		{name: "body copied from the credential works", plugin: httpPlugin(func(r *http.Request, c connector.CredentialValuesByID) error {
			b := bytes.Clone(c["token"])
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			return nil
		}), want: "|tok-1234"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t)
			k, err := connectortest.LoadHTTP(rec, tt.plugin, connectortest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/things", body)
			if err != nil {
				t.Fatal(err)
			}
			if tt.clientAuth != "" {
				req.Header.Set("Authorization", tt.clientAuth)
			}
			resp, err := k.Do(rec, req, connectortest.Credentials{"token": "tok-1234"})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Do error = %v, want one containing %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Errorf("Do: %v", err)
			} else {
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(got) != tt.want {
					t.Errorf("target answered %q, want %q", got, tt.want)
				}
			}
			if req.Header.Get("Authorization") != tt.clientAuth {
				t.Errorf("the incoming request's Authorization changed to %q", req.Header.Get("Authorization"))
			}
			checkReports(t, rec.finish(), tt.wantReport)
		})
	}
}

func TestHTTPOnlyTheRequestGiven(t *testing.T) {
	tests := []struct {
		name       string
		connector  sdkhttp.Connector
		wantReport string
	}{
		{name: "independent requests", connector: sdkhttp.ConnectorFunc(func(r *http.Request, c connector.CredentialValuesByID) error {
			r.Header.Set("Authorization", "Bearer "+string(c["token"]))
			return nil
		})},
		{name: "changes an earlier request", connector: &lastRequestKeeper{}, wantReport: "a request decorated earlier (number 1) changed afterwards (header X-Touched)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t)
			p := sdkhttp.PluginFunc(func(connector.Resources) sdkhttp.Connector { return tt.connector })
			k, err := connectortest.LoadHTTP(rec, p, connectortest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				req := httptest.NewRequest(http.MethodGet, "http://api.example.test/", nil)
				if _, err := k.Decorate(rec, req, connectortest.Credentials{"token": fmt.Sprintf("token-%d", i)}); err != nil {
					t.Fatal(err)
				}
			}
			checkReports(t, rec.finish(), tt.wantReport)
		})
	}
}

// previousToken keeps the token of the previous call in a shared field and
// sends it with the next request.
type previousToken struct {
	mu   sync.Mutex
	prev string
}

func (p *previousToken) Connect(r *http.Request, c connector.CredentialValuesByID) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prev != "" {
		r.Header.Set("X-Previous", p.prev)
	}
	p.prev = string(c["token"])
	r.Header.Set("Authorization", "Bearer "+string(c["token"]))
	return nil
}

func TestHTTPCheckConcurrent(t *testing.T) {
	tests := []struct {
		name       string
		connector  sdkhttp.Connector
		wantReport string
	}{
		{name: "per-request state only", connector: sdkhttp.ConnectorFunc(func(r *http.Request, c connector.CredentialValuesByID) error {
			r.Header.Set("Authorization", "Bearer "+string(c["token"]))
			return nil
		})},
		{name: "shared state", connector: &previousToken{}, wantReport: "carries the value of credential(s) token of request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t)
			p := sdkhttp.PluginFunc(func(connector.Resources) sdkhttp.Connector { return tt.connector })
			k, err := connectortest.LoadHTTP(rec, p, connectortest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var reqs []*http.Request
			var creds []connectortest.Credentials
			for i := range 8 {
				reqs = append(reqs, httptest.NewRequest(http.MethodGet, "http://api.example.test/", nil))
				creds = append(creds, connectortest.Credentials{"token": fmt.Sprintf("secret-token-%02d", i)})
			}
			outs, errs := k.CheckConcurrent(rec, reqs, creds)
			for i := range outs {
				if errs[i] != nil {
					t.Fatalf("request %d: %v", i, errs[i])
				}
				if got, want := outs[i].Header.Get("Authorization"), "Bearer "+creds[i]["token"]; got != want {
					t.Errorf("request %d Authorization = %q, want %q", i, got, want)
				}
			}
			checkReports(t, rec.finish(), tt.wantReport)
		})
	}
}

func TestHTTPOutgoingRequest(t *testing.T) {
	var seen http.Header
	p := httpPlugin(func(r *http.Request, _ connector.CredentialValuesByID) error {
		seen = r.Header.Clone()
		return nil
	})
	k, err := connectortest.LoadHTTP(t, p, connectortest.Options{Info: map[string]string{
		sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion, sdk.KeyType: sdk.TypeHTTPConnector, sdk.KeyID: "h", sdk.KeyDescription: "d",
	}})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "http://api.example.test/", nil)
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "1")
	req.Header.Set("Proxy-Authorization", "Basic eDp5")
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	req.Header.Set("Accept", "text/plain")
	if _, err := k.Decorate(t, req, connectortest.Credentials{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		header string
		want   string
	}{
		{header: "Connection"}, {header: "X-Hop"}, {header: "Proxy-Authorization"}, {header: "X-Forwarded-For"},
		{header: "Accept", want: "text/plain"},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			if got := seen.Get(tt.header); got != tt.want {
				t.Errorf("connector saw %s = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

func TestLogger(t *testing.T) {
	tests := []struct {
		name       string
		log        func(r connector.Resources, c connector.CredentialValuesByID)
		quiet      bool
		wantReport string
		wantLevel  string
	}{
		{name: "debug message", log: func(r connector.Resources, _ connector.CredentialValuesByID) { r.Logger().Debugf("dialing %s", "x") }, wantLevel: "debug"},
		{name: "debug off", quiet: true, log: func(r connector.Resources, _ connector.CredentialValuesByID) { r.Logger().Debugf("dialing") }},
		{name: "secret logged", log: func(r connector.Resources, c connector.CredentialValuesByID) {
			r.Logger().Infof("using %s", c["token"])
		}, wantLevel: "info", wantReport: "a log message written during Connect contains the value of credential(s) token"},
		{name: "secret logged through a copy", log: func(r connector.Resources, c connector.CredentialValuesByID) {
			r.Logger().CopyWith("sub", true).Warnln("token", string(c["token"]))
		}, wantLevel: "warn", wantReport: "contains the value of credential(s) token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t)
			p := sdkhttp.PluginFunc(func(r connector.Resources) sdkhttp.Connector {
				return sdkhttp.ConnectorFunc(func(_ *http.Request, c connector.CredentialValuesByID) error {
					tt.log(r, c)
					return nil
				})
			})
			k, err := connectortest.LoadHTTP(rec, p, connectortest.Options{Quiet: tt.quiet})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "http://api.example.test/", nil)
			if _, err := k.Decorate(rec, req, connectortest.Credentials{"token": "tok-5678"}); err != nil {
				t.Fatal(err)
			}
			entries := k.Logger().Entries()
			if tt.wantLevel == "" && len(entries) != 0 {
				t.Errorf("entries = %v, want none", entries)
			}
			if tt.wantLevel != "" && (len(entries) != 1 || entries[0].Level != tt.wantLevel) {
				t.Errorf("entries = %v, want one at level %s", entries, tt.wantLevel)
			}
			checkReports(t, rec.finish(), tt.wantReport)
		})
	}
}
