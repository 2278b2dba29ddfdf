package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/log"
)

type testResources struct{}

func (testResources) Config() []byte     { return nil }
func (testResources) Logger() log.Logger { return nil }

func TestConnect(t *testing.T) {
	tests := []struct {
		name       string
		creds      connector.CredentialValuesByID
		clientAuth string // Authorization header the client sent, if any
		want       string // wanted Authorization header; "" means an error is wanted
		wantErr    string
	}{
		{name: "sets header", creds: connector.CredentialValuesByID{"token": []byte("abc.def")}, want: "Bearer abc.def"},
		{name: "replaces client header", creds: connector.CredentialValuesByID{"token": []byte("real")}, clientAuth: "Bearer fake", want: "Bearer real"},
		{name: "missing token", creds: connector.CredentialValuesByID{}, wantErr: "token is missing"},
		{name: "empty token", creds: connector.CredentialValuesByID{"token": {}}, wantErr: "token is missing"},
		{name: "line break in token", creds: connector.CredentialValuesByID{"token": []byte("a\r\nX-Evil: 1")}, wantErr: "line break"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://api.example.test/v1/things", nil)
			if tt.clientAuth != "" {
				r.Header.Set("Authorization", tt.clientAuth)
			}
			c := GetHTTPPlugin().NewConnector(testResources{})
			err := c.Connect(r, tt.creds)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Connect error = %v, want one containing %q", err, tt.wantErr)
				}
				if tok := tt.creds["token"]; len(tok) > 0 && strings.Contains(err.Error(), string(tok)) {
					t.Errorf("error reveals the token: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			// The header must survive the broker zeroing the credentials.
			tt.creds.Zero()
			if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != tt.want {
				t.Errorf("Authorization = %q, want [%q]", got, tt.want)
			}
		})
	}
}

// TestConnectThroughServer sends a decorated request to a real server.
func TestConnectThroughServer(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
	}))
	defer srv.Close()

	r, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := GetHTTPPlugin().NewConnector(testResources{}).Connect(r, connector.CredentialValuesByID{"token": []byte("t0k3n")}); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got != "Bearer t0k3n" {
		t.Errorf("server saw Authorization %q, want %q", got, "Bearer t0k3n")
	}
}

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name    string
		config  string
		wantErr bool
	}{
		{name: "none", config: ""},
		{name: "empty map", config: "{}\n"},
		{name: "unexpected block", config: "header: X-Token\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := plugin{}.ValidateConfig([]byte(tt.config))
			if (err != nil) != tt.wantErr {
				t.Errorf("ValidateConfig(%q) = %v, want error %v", tt.config, err, tt.wantErr)
			}
		})
	}
}

func TestPluginInfo(t *testing.T) {
	info := PluginInfo()
	want := map[string]string{
		sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion,
		sdk.KeyType:             sdk.TypeHTTPConnector,
		sdk.KeyID:               "bearer",
	}
	for k, v := range want {
		if info[k] != v {
			t.Errorf("PluginInfo()[%q] = %q, want %q", k, info[k], v)
		}
	}
	if info[sdk.KeyDescription] == "" {
		t.Error("PluginInfo has no description")
	}
}

func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("SECRETLESS_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("%s not found and SECRETLESS_REQUIRE_INTEGRATION=1: %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

// TestBuildsAsPlugin runs the build command the README documents.
func TestBuildsAsPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin; skipped with -short")
	}
	lookPath(t, "gcc")
	goBin := lookPath(t, "go")
	out := filepath.Join(t.TempDir(), "bearer.so")
	cmd := exec.Command(goBin, "build", "-buildmode=plugin", "-o="+out, "./examples/plugins/bearer")
	cmd.Dir = moduleRoot(t, goBin)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plugin build failed: %v\n%s", err, b)
	}
	checkExports(t, out, "github.com/secretless-broker/secretless-broker/examples/plugins/bearer", "PluginInfo", "GetHTTPPlugin")
}
