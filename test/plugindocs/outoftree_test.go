package plugindocs

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tokenTarget is the echo server the line-token plugins log in to: it wants
// "TOKEN <token>" as the first line, answers "OK", then echoes every line
// upper-cased. Any other first line is answered with "NO" and closed.
func tokenTarget(t *testing.T, token string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				if line, _ := r.ReadString('\n'); line != "TOKEN "+token+"\n" {
					fmt.Fprint(c, "NO\n")
					return
				}
				fmt.Fprint(c, "OK\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprint(c, strings.ToUpper(line))
				}
			}()
		}
	}()
	return l.Addr().String()
}

// writeSums writes a checksum file for the .so files in dir, in the format
// "sha256sum *.so" writes, and returns its path.
func writeSums(t *testing.T, dir string) string {
	t.Helper()
	out, err := run(dir, nil, "bash", "-c", "sha256sum -- *.so")
	if err != nil {
		t.Fatal(err)
	}
	sums := filepath.Join(filepath.Dir(dir), filepath.Base(dir)+"-SHA256SUM.txt")
	if err := os.WriteFile(sums, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return sums
}

// runTokenService starts a broker binary with one plugin directory and a service
// of the given line-token connector, sends a line through it as an
// application without the token would, and checks the target's answer.
func runTokenService(t *testing.T, brokerBin, pluginDir, sums, connectorID string) {
	t.Helper()
	const token = "tok-5e2b-77c1"
	target := tokenTarget(t, token)
	listen, health := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "secretless.yml")
	yml := fmt.Sprintf(`version: 2
services:
  lines:
    connector: %s
    listenOn: tcp://%s
    credentials:
      address: %s
      token:
        from: env
        get: LINE_TOKEN
`, connectorID, listen, target)
	if err := os.WriteFile(cfg, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, []string{"LINE_TOKEN=" + token}, brokerBin, "-f", cfg, "-p", pluginDir, "-s", sums, "-health-addr", health, "-debug")
	p.waitListening(t, listen)

	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "hello through the broker\n")
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "HELLO THROUGH THE BROKER\n" {
		t.Fatalf("application read %q (%v), want the target's upper-case echo\nbroker output:\n%s", got, err, p.output.String())
	}
	if out := p.output.String(); !strings.Contains(out, "plugin loaded") || !strings.Contains(out, "id="+connectorID) {
		t.Errorf("broker output does not say the plugin %s was loaded:\n%s", connectorID, out)
	}
	if strings.Contains(p.output.String(), token) {
		t.Errorf("the broker's debug output contains the token")
	}
}

func sha256File(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestOutOfTreePluginLoads builds examples/outoftree, a module of its own
// that requires the SDK module, in its own directory, and runs it in a
// broker built the way the README builds it, against an echo target: once
// built with the plain "go build -buildmode=plugin" of the docs, once with
// "secretless-broker plugins build".
func TestOutOfTreePluginLoads(t *testing.T) {
	need(t, "go", "gcc", "bash", "sha256sum")
	src := filepath.Join(root(t), "examples", "outoftree")
	bin := broker(t)
	digests := map[string]string{}
	tests := []struct {
		name  string
		build func(t *testing.T, pluginDir string) (sums string)
	}{
		{name: "go build -buildmode=plugin", build: func(t *testing.T, pluginDir string) string {
			if _, err := run(src, nil, "go", "build", "-buildmode=plugin", "-o", filepath.Join(pluginDir, "linetoken.so"), "."); err != nil {
				t.Fatal(err)
			}
			return writeSums(t, pluginDir)
		}},
		{name: "secretless-broker plugins build", build: func(t *testing.T, pluginDir string) string {
			sums := pluginDir + "-SHA256SUM.txt"
			if _, err := run(filepath.Dir(pluginDir), nil, bin, "plugins", "build", "-o", pluginDir, "-s", sums, src); err != nil {
				t.Fatal(err)
			}
			// The helper names the file after the directory.
			if err := os.Rename(filepath.Join(pluginDir, "outoftree.so"), filepath.Join(pluginDir, "linetoken.so")); err != nil {
				t.Fatal(err)
			}
			return writeSums(t, pluginDir)
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pluginDir := filepath.Join(work, "outoftree-proof", fmt.Sprint(i), "plugins")
			if err := os.MkdirAll(pluginDir, 0o755); err != nil {
				t.Fatal(err)
			}
			sums := tt.build(t, pluginDir)
			digests[tt.name] = sha256File(t, filepath.Join(pluginDir, "linetoken.so"))
			runTokenService(t, bin, pluginDir, sums, "linetoken")
		})
	}
	t.Run("both builds are the same bytes", func(t *testing.T) {
		if len(digests) == 2 && digests[tests[0].name] != digests[tests[1].name] {
			t.Errorf("digests differ: %v", digests)
		}
	})
}

// TestPortedPlugin checks that examples/ported/main.go is its Secretless
// original after scripts/port-secretless-plugin.sh, with nothing but import
// paths changed, and that it builds and runs in the broker.
func TestPortedPlugin(t *testing.T) {
	need(t, "go", "gcc", "bash", "sha256sum", "sed")
	r := root(t)
	original, err := os.ReadFile(filepath.Join(r, "examples", "ported", "testdata", "secretless", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	ported, err := os.ReadFile(filepath.Join(r, "examples", "ported", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, "port-proof", "src")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), original, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("script output is the ported file", func(t *testing.T) {
		if out, err := run(dir, nil, "sh", filepath.Join(r, "scripts", "port-secretless-plugin.sh"), "."); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		got, err := os.ReadFile(filepath.Join(dir, "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, ported) {
			t.Errorf("porting the original gives\n%s\nwant examples/ported/main.go:\n%s", got, ported)
		}
	})
	t.Run("only import paths differ", func(t *testing.T) {
		a, b := strings.Split(string(original), "\n"), strings.Split(string(ported), "\n")
		if len(a) != len(b) {
			t.Fatalf("line counts differ: %d and %d", len(a), len(b))
		}
		for i := range a {
			if a[i] == b[i] {
				continue
			}
			if !strings.Contains(a[i], `"github.com/cyberark/secretless-broker/pkg/secretless/`) ||
				!strings.Contains(b[i], `"github.com/secretless-broker/secretless-broker/sdk/`) {
				t.Errorf("line %d differs beyond its import path:\n  %s\n  %s", i+1, a[i], b[i])
			}
		}
	})
	t.Run("builds and runs in the broker", func(t *testing.T) {
		pluginDir := filepath.Join(work, "port-proof", "plugins")
		if _, err := run(r, nil, "go", "build", "-buildmode=plugin", "-o", filepath.Join(pluginDir, "linetoken-ported.so"), "./examples/ported"); err != nil {
			t.Fatal(err)
		}
		runTokenService(t, broker(t), pluginDir, writeSums(t, pluginDir), "linetoken-ported")
	})
}

// TestNestedModules runs vet and the tests of the example modules that
// have their own go.mod (the main module's "go test ./..." does not enter
// them), and checks that each requires the SDK at the version the broker
// requires, through a replace directive that resolves to this checkout's
// sdk directory.
func TestNestedModules(t *testing.T) {
	need(t, "go")
	r := root(t)
	brokerReq := sdkRequirement(t, r)
	for _, rel := range []string{"examples/outoftree", "examples/templates/tcp", "examples/templates/http"} {
		t.Run(rel, func(t *testing.T) {
			dir := filepath.Join(r, rel)
			out, err := run(dir, nil, "go", "mod", "edit", "-json")
			if err != nil {
				t.Fatal(err)
			}
			var mod struct {
				Require []struct{ Path, Version string }
				Replace []struct {
					Old struct{ Path string }
					New struct{ Path string }
				}
			}
			if err := json.Unmarshal([]byte(out), &mod); err != nil {
				t.Fatal(err)
			}
			var version, replace string
			for _, req := range mod.Require {
				if req.Path == sdkPath {
					version = req.Version
				}
			}
			for _, rep := range mod.Replace {
				if rep.Old.Path == sdkPath {
					replace = rep.New.Path
				}
			}
			if version != brokerReq {
				t.Errorf("go.mod requires %s %q, the broker requires %q", sdkPath, version, brokerReq)
			}
			if got := filepath.Join(dir, replace); !filepath.IsAbs(replace) && got != filepath.Join(r, "sdk") {
				t.Errorf("go.mod replaces the SDK with %q (%s), want this checkout's sdk directory", replace, got)
			}
			if _, err := run(dir, nil, "go", "vet", "./..."); err != nil {
				t.Error(err)
			}
			if _, err := run(dir, nil, "go", "test", "-count=1", "./..."); err != nil {
				t.Error(err)
			}
		})
	}
}

const sdkPath = "github.com/secretless-broker/secretless-broker/sdk"

// sdkRequirement is the SDK version the module in dir requires.
func sdkRequirement(t *testing.T, dir string) string {
	t.Helper()
	out, err := run(dir, nil, "go", "list", "-m", "-f", "{{.Version}}", sdkPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}
