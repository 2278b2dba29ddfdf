// Package e2e runs the real secretless-broker binary with the example redis
// plugin against a real redis-server, and checks that every plugin and
// config mistake stops the broker before its listener opens.
//
// It builds the broker and the plugin once per run with the commands the
// documentation gives. Tools it needs: go, gcc (cgo), sha256sum, redis-server
// and redis-cli. A missing tool skips the tests that need it, unless
// SECRETLESS_REQUIRE_INTEGRATION=1, which turns every skip into a failure.
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const pluginPkg = "./examples/plugins/redis"

// workDir holds every binary the tests build; removed after the run.
var workDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "secretless-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = d
	code := m.Run()
	stopSharedRedis()
	_ = os.RemoveAll(workDir)
	os.Exit(code)
}

func requireIntegration() bool { return os.Getenv("SECRETLESS_REQUIRE_INTEGRATION") == "1" }

// need returns the path of a tool, or skips (fails under
// SECRETLESS_REQUIRE_INTEGRATION=1) when it is missing. Every test reaches it
// before building or starting anything, so it also implements -short.
func need(t *testing.T, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end tests build and run the broker; skipped with -short")
	}
	p, err := exec.LookPath(name)
	if err != nil {
		if requireIntegration() {
			t.Fatalf("%s not found and SECRETLESS_REQUIRE_INTEGRATION=1: %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

// once runs a build at most once per test binary and remembers its outcome.
type once struct {
	sync.Once
	path string
	err  error
}

func (o *once) get(t *testing.T, build func() (string, error)) string {
	t.Helper()
	o.Do(func() { o.path, o.err = build() })
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.path
}

var (
	rootOnce, brokerOnce, pluginOnce, trimpathOnce, nonGoOnce once
)

// moduleRoot is the directory of the broker's go.mod: documented build
// commands run there.
func moduleRoot(t *testing.T) string {
	goBin := need(t, "go")
	return rootOnce.get(t, func() (string, error) {
		out, err := exec.Command(goBin, "env", "GOMOD").Output()
		if err != nil {
			return "", fmt.Errorf("go env GOMOD: %w", err)
		}
		mod := strings.TrimSpace(string(out))
		if mod == "" || mod == os.DevNull {
			return "", fmt.Errorf("not inside the broker's module")
		}
		return filepath.Dir(mod), nil
	})
}

func goBuild(t *testing.T, out string, args ...string) (string, error) {
	cmd := exec.Command(need(t, "go"), append([]string{"build"}, args...)...)
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, b)
	}
	return out, nil
}

// brokerBin builds cmd/secretless-broker plainly (no -race, no -trimpath).
func brokerBin(t *testing.T) string {
	t.Helper()
	need(t, "gcc")
	out := filepath.Join(workDir, "bin", "secretless-broker")
	return brokerOnce.get(t, func() (string, error) {
		return goBuild(t, out, "-o", out, "./cmd/secretless-broker")
	})
}

// redisPlugin builds the example plugin exactly as its README says.
func redisPlugin(t *testing.T) string {
	t.Helper()
	need(t, "gcc")
	out := filepath.Join(workDir, "plugin", "redis.so")
	return pluginOnce.get(t, func() (string, error) {
		return goBuild(t, out, "-buildmode=plugin", "-o="+out, pluginPkg)
	})
}

// trimpathPlugin builds the same plugin with -trimpath, which the broker
// (built without it) cannot load.
func trimpathPlugin(t *testing.T) string {
	t.Helper()
	need(t, "gcc")
	out := filepath.Join(workDir, "plugin-trimpath", "redis.so")
	return trimpathOnce.get(t, func() (string, error) {
		return goBuild(t, out, "-trimpath", "-buildmode=plugin", "-o="+out, pluginPkg)
	})
}

// nonGoLibrary builds an ordinary C shared library.
func nonGoLibrary(t *testing.T) string {
	t.Helper()
	gcc := need(t, "gcc")
	return nonGoOnce.get(t, func() (string, error) {
		dir := filepath.Join(workDir, "c")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		src := filepath.Join(dir, "x.c")
		if err := os.WriteFile(src, []byte("int answer(void) { return 42; }\n"), 0o644); err != nil {
			return "", err
		}
		out := filepath.Join(dir, "x.so")
		if b, err := exec.Command(gcc, "-shared", "-fPIC", "-o", out, src).CombinedOutput(); err != nil {
			return "", fmt.Errorf("gcc: %v\n%s", err, b)
		}
		return out, nil
	})
}

// copyFile copies src to dst (mode 0644).
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// sha256sum runs the real sha256sum in dir with args and returns its output.
func sha256sum(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(need(t, "sha256sum"), args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sha256sum %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}
