package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var bearerOnce once

// bearerPlugin builds the HTTP example plugin with the documented command.
func bearerPlugin(t *testing.T) string {
	t.Helper()
	need(t, "gcc")
	out := filepath.Join(workDir, "plugin-bearer", "bearer.so")
	return bearerOnce.get(t, func() (string, error) {
		return goBuild(t, out, "-buildmode=plugin", "-o="+out, "./examples/plugins/bearer")
	})
}

// TestHTTPPluginAndTCPPluginTogether loads the redis (TCP) and bearer (HTTP)
// plugins side by side, and drives the bearer service with curl -x: the
// token from the provider replaces the one the client sent.
func TestHTTPPluginAndTCPPluginTogether(t *testing.T) {
	curl := need(t, "curl")
	var mu sync.Mutex
	var seen []string
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, strings.Join(r.Header.Values("Authorization"), "|"))
		mu.Unlock()
		_, _ = io.WriteString(w, "hello from target")
	}))
	defer target.Close()

	r := theRedis(t)
	f := newFixture(t)
	copyFile(t, bearerPlugin(t), filepath.Join(f.pluginDir, "bearer.so"))
	f.writeSums(t, `sha256sum "$1"/*`)
	proxyPort := freePort(t)
	const token = "tok-e2e-9f8e7d"
	f.writeConfig(t, f.redisConfig(r.port)+fmt.Sprintf(`  api:
    connector: bearer
    listenOn: tcp://127.0.0.1:%d
    credentials:
      token:
        from: env
        get: API_TOKEN
    config:
      authenticateURLsMatching: ^%s
`, proxyPort, target.URL))
	health := freePort(t)
	args := []string{"-f", f.configFile, "-p", f.pluginDir, "-s", f.sumFile, "-debug", "-health-addr", "127.0.0.1:" + strconv.Itoa(health)}
	p := start(t, []string{"REDIS_PASSWORD=" + r.password, "API_TOKEN=" + token}, brokerBin(t), args...)
	t.Cleanup(p.stop)
	waitUntil(t, p, "/ready answers 200", 20*time.Second, func() bool { return ready(health) })

	if got := redisCLI(t, f.listenPort, "ping"); got != "PONG" {
		t.Errorf("redis ping through the broker = %q", got)
	}
	cmd := exec.Command(curl, "-sS", "-x", "http://127.0.0.1:"+strconv.Itoa(proxyPort), "-H", "Authorization: Bearer client-fake", target.URL+"/v1/thing")
	cmd.Env = append(os.Environ(), "NO_PROXY=", "no_proxy=")
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "hello from target" {
		t.Fatalf("curl through the broker: %v: %s\nbroker stderr:\n%s", err, out, p.stderr.String())
	}
	mu.Lock()
	got := append([]string(nil), seen...)
	mu.Unlock()
	if len(got) != 1 || got[0] != "Bearer "+token {
		t.Errorf("target saw Authorization %q, want exactly one %q", got, "Bearer "+token)
	}
	// An unmatched URL is refused, not sent on without credentials.
	cmd = exec.Command(curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://127.0.0.1:"+strconv.Itoa(proxyPort), "http://127.0.0.1:1/")
	if out, _ := cmd.Output(); string(out) != "403" {
		t.Errorf("unmatched URL answered %s, want 403", out)
	}
	p.stop()
	if all := p.stdout.String() + p.stderr.String(); strings.Contains(all, token) || strings.Contains(all, r.password) {
		t.Error("a secret appears in the broker's debug output")
	}
	if !strings.Contains(p.stderr.String(), `msg="plugin loaded" file=bearer.so id=bearer type=connector.http`) {
		t.Errorf("no load line for the bearer plugin:\n%s", p.stderr.String())
	}
}
