package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/internal/plugintest"
	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connectortest"
)

// loadKit loads the plugin with the SDK's test kit, as the broker would.
func loadKit(t *testing.T) *connectortest.HTTP {
	t.Helper()
	k, err := connectortest.LoadHTTP(t, GetHTTPPlugin(), connectortest.Options{Info: PluginInfo()})
	if err != nil {
		t.Fatalf("LoadHTTP: %v", err)
	}
	return k
}

// TestConnect sends requests decorated by the connector to a real HTTP
// server; the kit zeroes the credentials before each request is sent and
// fails the test if the token shows up in an error or log message.
func TestConnect(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Join(r.Header.Values("Authorization"), ","))
	}))
	defer srv.Close()

	tests := []struct {
		name       string
		creds      connectortest.Credentials
		clientAuth string // Authorization header the client sent, if any
		want       string // Authorization the server saw; "" means an error is wanted
		wantErr    string
	}{
		{name: "sets header", creds: connectortest.Credentials{"token": "abc.def"}, want: "Bearer abc.def"},
		{name: "replaces client header", creds: connectortest.Credentials{"token": "real"}, clientAuth: "Bearer fake", want: "Bearer real"},
		{name: "missing token", creds: connectortest.Credentials{}, wantErr: "token is missing"},
		{name: "empty token", creds: connectortest.Credentials{"token": ""}, wantErr: "token is missing"},
		{name: "line break in token", creds: connectortest.Credentials{"token": "a\r\nX-Evil: 1"}, wantErr: "line break"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/things", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.clientAuth != "" {
				r.Header.Set("Authorization", tt.clientAuth)
			}
			resp, err := loadKit(t).Do(t, r, tt.creds)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Connect error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if string(got) != tt.want {
				t.Errorf("server saw Authorization %q, want %q", got, tt.want)
			}
		})
	}
}

// TestConcurrentRequests: every request carries its own token only.
func TestConcurrentRequests(t *testing.T) {
	var reqs []*http.Request
	var creds []connectortest.Credentials
	for i := range 16 {
		reqs = append(reqs, httptest.NewRequest(http.MethodGet, "http://api.example.test/", nil))
		creds = append(creds, connectortest.Credentials{"token": fmt.Sprintf("token-%04d", i)})
	}
	outs, errs := loadKit(t).CheckConcurrent(t, reqs, creds)
	for i := range outs {
		t.Run(fmt.Sprintf("request %d", i), func(t *testing.T) {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if got, want := outs[i].Header.Get("Authorization"), "Bearer "+creds[i]["token"]; got != want {
				t.Errorf("Authorization = %q, want %q", got, want)
			}
		})
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
	if err := connectortest.CheckPluginInfo(info, sdk.TypeHTTPConnector); err != nil {
		t.Fatal(err)
	}
	if info[sdk.KeyID] != "bearer" {
		t.Errorf("PluginInfo()[%q] = %q, want %q", sdk.KeyID, info[sdk.KeyID], "bearer")
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
	cmd.Dir = plugintest.ModuleRoot(t, goBin)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plugin build failed: %v\n%s", err, b)
	}
	plugintest.CheckExports(t, out, "github.com/secretless-broker/secretless-broker/examples/plugins/bearer", "PluginInfo", "GetHTTPPlugin")
}
