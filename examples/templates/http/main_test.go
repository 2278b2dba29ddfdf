package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk/connectortest"
)

// target stands in for the API: it answers with the header values it got.
// TODO: check what your API checks, or call the real API in a separate,
// opt-in test.
func target(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "X-Api-Key=%s Authorization=%s", r.Header.Get("X-Api-Key"), r.Header.Get("Authorization"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestDo(t *testing.T) {
	srv := target(t)
	tests := []struct {
		name      string
		config    string
		clientKey string // what the application sent, if anything
		creds     connectortest.Credentials
		want      string // response body; "" means an error is wanted
		wantErr   string
	}{
		{name: "default header", creds: connectortest.Credentials{"api_key": "key-123456"}, want: "X-Api-Key=key-123456 Authorization="},
		{name: "replaces the client's value", clientKey: "forged", creds: connectortest.Credentials{"api_key": "key-123456"},
			want: "X-Api-Key=key-123456 Authorization="},
		{name: "configured header", config: "header: authorization\n", creds: connectortest.Credentials{"api_key": "key-123456"},
			want: "X-Api-Key= Authorization=key-123456"},
		{name: "empty key", creds: connectortest.Credentials{"api_key": ""}, wantErr: "api_key is empty"},
		{name: "line break", creds: connectortest.Credentials{"api_key": "k\r\nX-Evil: 1"}, wantErr: "line break"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := connectortest.LoadHTTP(t, GetHTTPPlugin(), connectortest.Options{Info: PluginInfo(), Config: []byte(tt.config)})
			if err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/items", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.clientKey != "" {
				req.Header.Set("X-Api-Key", tt.clientKey)
			}
			resp, err := k.Do(t, req, tt.creds)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Do error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if string(body) != tt.want {
				t.Errorf("API saw %q, want %q", body, tt.want)
			}
		})
	}
}

// TestConcurrentRequests checks that each request carries only its own
// credentials when many run at once, as they do in the broker.
func TestConcurrentRequests(t *testing.T) {
	k, err := connectortest.LoadHTTP(t, GetHTTPPlugin(), connectortest.Options{Info: PluginInfo()})
	if err != nil {
		t.Fatal(err)
	}
	var reqs []*http.Request
	var creds []connectortest.Credentials
	for i := range 16 {
		reqs = append(reqs, httptest.NewRequest(http.MethodGet, "http://api.example.test/", nil))
		creds = append(creds, connectortest.Credentials{"api_key": fmt.Sprintf("key-%04d", i)})
	}
	outs, errs := k.CheckConcurrent(t, reqs, creds)
	for i := range outs {
		t.Run(fmt.Sprintf("request %d", i), func(t *testing.T) {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if got := outs[i].Header.Get("X-Api-Key"); got != creds[i]["api_key"] {
				t.Errorf("X-Api-Key = %q, want %q", got, creds[i]["api_key"])
			}
		})
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		opts    connectortest.Options
		wantErr string
	}{
		{name: "no config", opts: connectortest.Options{Declared: []string{"api_key"}}},
		{name: "header", opts: connectortest.Options{Config: []byte("header: X-Token\n")}},
		{name: "quoted header", opts: connectortest.Options{Config: []byte("header: 'X-Token'\n")}},
		{name: "unknown key", opts: connectortest.Options{Config: []byte("prefix: Bearer\n")}, wantErr: `unknown key "prefix"`},
		{name: "bad header", opts: connectortest.Options{Config: []byte("header: X Token\n")}, wantErr: `"X Token" is not a header name`},
		{name: "api_key missing", opts: connectortest.Options{Declared: []string{"token"}}, wantErr: "credential api_key is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.Info = PluginInfo()
			_, err := connectortest.LoadHTTP(t, GetHTTPPlugin(), opts)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("LoadHTTP: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("LoadHTTP error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
