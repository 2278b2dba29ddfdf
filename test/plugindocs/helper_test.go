package plugindocs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

var trimBrokerOnce once

// trimpathBroker builds the broker the README's way plus -trimpath.
func trimpathBroker(t *testing.T) string {
	t.Helper()
	need(t, "go", "gcc")
	bin := filepath.Join(work, "trimpath", "bin", "secretless-broker")
	trimBrokerOnce.do(t, func() error {
		_, err := run(root(t), nil, "go", "build", "-trimpath", "-o", bin, "./cmd/secretless-broker")
		return err
	})
	return bin
}

// copyModule copies examples/outoftree and the SDK to dir/linetoken and
// dir/sdk-copy, and points the module's SDK requirement (at version) at the
// copy with a relative replace directive.
func copyModule(t *testing.T, dir, version string) string {
	t.Helper()
	r := root(t)
	mod := filepath.Join(dir, "linetoken")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{filepath.Join(r, "examples", "outoftree"), mod}, {filepath.Join(r, "sdk"), filepath.Join(dir, "sdk-copy")}} {
		if _, err := run(dir, nil, "cp", "-r", c[0], c[1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := run(mod, nil, "go", "mod", "edit", "-dropreplace="+sdkPath, "-require="+sdkPath+"@"+version,
		"-replace="+sdkPath+"@"+version+"=../sdk-copy"); err != nil {
		t.Fatal(err)
	}
	return mod
}

// TestTrimpathBroker proves the rule for a broker built with -trimpath: a
// plugin built with -trimpath loads with the SDK compiled from a copy in
// another directory, as long as it is required at the broker's version;
// another version, or a plugin without -trimpath, is refused with a message
// that says what to change.
func TestTrimpathBroker(t *testing.T) {
	need(t, "go", "gcc", "bash", "sha256sum")
	bin := trimpathBroker(t)
	version := sdkRequirement(t, root(t))

	t.Run("SDK copied elsewhere, same version", func(t *testing.T) {
		dir := filepath.Join(work, "trimpath", "copy")
		mod := copyModule(t, dir, version)
		pluginDir := filepath.Join(dir, "plugins")
		out, err := run(dir, nil, bin, "plugins", "build", "-o", pluginDir, "-s", pluginDir+"-SHA256SUM.txt", mod)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "-trimpath=true") {
			t.Errorf("plugins build did not build with -trimpath:\n%s", out)
		}
		runTokenService(t, bin, pluginDir, writeSums(t, pluginDir), "linetoken")
	})

	t.Run("SDK required at another version", func(t *testing.T) {
		dir := filepath.Join(work, "trimpath", "version")
		mod := copyModule(t, dir, "v0.1.0")
		out, err := run(dir, nil, bin, "plugins", "build", "-o", filepath.Join(dir, "plugins"), mod)
		if err == nil {
			t.Fatalf("plugins build succeeded, want a refusal:\n%s", out)
		}
		want := "module " + sdkPath + ": the plugin requires v0.1.0, the broker was built with " + version +
			"; require exactly that: go mod edit -require=" + sdkPath + "@" + version
		if !strings.Contains(out, want) {
			t.Errorf("plugins build said:\n%s\nwant it to say: %s", out, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "plugins", "linetoken.so")); err == nil {
			t.Errorf("a refused build left a plugin in the plugin directory")
		}
	})

	t.Run("plugin built without -trimpath", func(t *testing.T) {
		dir := filepath.Join(work, "trimpath", "plain")
		so := filepath.Join(dir, "linetoken.so")
		if _, err := run(filepath.Join(root(t), "examples", "outoftree"), nil, "go", "build", "-buildmode=plugin", "-o", so, "."); err != nil {
			t.Fatal(err)
		}
		out, err := run(dir, nil, bin, "plugins", "check", so)
		if err == nil {
			t.Fatalf("plugins check accepted it:\n%s", out)
		}
		if want := "to fix: -trimpath: the plugin was built with -trimpath=false, the broker with -trimpath=true; add -trimpath"; !strings.Contains(out, want) {
			t.Errorf("plugins check said:\n%s\nwant: %s", out, want)
		}
	})
}

// fakeGo writes a "go" script that answers "go env -json" with the given
// JSON and runs the real go command for everything else.
func fakeGo(t *testing.T, envJSON string) string {
	t.Helper()
	dir := t.TempDir()
	real, err := run(dir, nil, "bash", "-c", "command -v go")
	if err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nif [ \"$1\" = env ]; then cat <<'EOF'\n" + envJSON + "\nEOF\nexit 0; fi\nexec " + strings.TrimSpace(real) + " \"$@\"\n"
	p := filepath.Join(dir, "go")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBuildHelperRefusals checks what "plugins build" refuses before it
// builds anything, and that each message says what to do.
func TestBuildHelperRefusals(t *testing.T) {
	need(t, "go", "gcc", "bash")
	bin := broker(t)
	src := filepath.Join(root(t), "examples", "outoftree")
	goroot := runtime.GOROOT()
	if out, err := run(src, nil, "go", "env", "GOROOT"); err == nil {
		goroot = strings.TrimSpace(out)
	}
	goVersion := strings.TrimSpace(mustRun(t, src, "go", "env", "GOVERSION"))
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) []string // extra arguments before the package directories
		want  string
	}{
		{name: "another Go release", setup: func(t *testing.T, dir string) []string {
			return []string{"-go", fakeGo(t, `{"GOVERSION":"go1.25.0","GOROOT":"`+goroot+`","CC":"gcc","GOFLAGS":""}`)}
		}, want: `is go1.25.0, this broker was built with ` + goVersion + `: install Go ` + strings.TrimPrefix(goVersion, "go") + ` and put it first in PATH, or pass -go /path/to/that/go`},
		{name: "another GOROOT", setup: func(t *testing.T, dir string) []string {
			return []string{"-go", fakeGo(t, `{"GOVERSION":"`+goVersion+`","GOROOT":"/opt/other-go","CC":"gcc","GOFLAGS":""}`)}
		}, want: "the go command's GOROOT is /opt/other-go, but this broker was built without -trimpath by the Go in " + goroot},
		{name: "no C compiler", setup: func(t *testing.T, dir string) []string {
			return []string{"-go", fakeGo(t, `{"GOVERSION":"`+goVersion+`","GOROOT":"`+goroot+`","CC":"no-such-cc","GOFLAGS":""}`)}
		}, want: `cgo needs the C compiler "no-such-cc", which is not installed`},
		{name: "checksum file inside the plugin directory", setup: func(t *testing.T, dir string) []string {
			return []string{"-s", filepath.Join(dir, "plugins", "PLUGINS_SHA256SUM.txt")}
		}, want: "the checksum file must not be inside the plugin directory"},
		{name: "unlisted plugin in the directory", setup: func(t *testing.T, dir string) []string {
			writeFile(t, filepath.Join(dir, "plugins", "other.so"), "not listed")
			return nil
		}, want: "does not list; remove it, or rebuild it with this command"},
		{name: "modified plugin in the directory", setup: func(t *testing.T, dir string) []string {
			writeFile(t, filepath.Join(dir, "plugins", "other.so"), "changed")
			writeFile(t, filepath.Join(dir, "PLUGINS_SHA256SUM.txt"), strings.Repeat("0", 64)+"  other.so\n")
			return nil
		}, want: "refusing to bless a modified plugin"},
		{name: "default checksum file of another directory", setup: func(t *testing.T, dir string) []string {
			writeFile(t, filepath.Join(dir, "PLUGINS_SHA256SUM.txt"), strings.Repeat("0", 64)+"  elsewhere.so\n")
			return nil
		}, want: "lists plugins that are not in"},
		{name: "something else in the directory", setup: func(t *testing.T, dir string) []string {
			writeFile(t, filepath.Join(dir, "plugins", "README"), "hi")
			return nil
		}, want: `holds "README", which is not a plugin file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "plugins"), 0o755); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"plugins", "build", "-o", filepath.Join(dir, "plugins")}, tt.setup(t, dir)...)
			out, err := run(dir, nil, bin, append(args, src)...)
			if err == nil {
				t.Fatalf("plugins build succeeded, want a refusal:\n%s", out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("plugins build said:\n%s\nwant it to contain: %s", out, tt.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "plugins", "outoftree.so")); err == nil {
				t.Errorf("a refused build left outoftree.so in the plugin directory")
			}
		})
	}
}

// TestPluginsEnvJSON checks the machine-readable form against the broker's
// own build.
func TestPluginsEnvJSON(t *testing.T) {
	need(t, "go", "gcc")
	out := mustRun(t, work, broker(t), "plugins", "env", "-json")
	var env struct {
		GoVersion string `json:"goVersion"`
		Cgo       bool   `json:"cgo"`
		SDK       struct {
			Path, Version, Replace string
			CompiledDir            string `json:"compiledDir"`
		} `json:"sdk"`
		BuildFlags []string `json:"buildFlags"`
	}
	if err := json.Unmarshal([]byte(out), &env); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tests := []struct {
		name, got, want string
	}{
		{name: "go version", got: env.GoVersion, want: strings.TrimSpace(mustRun(t, root(t), "go", "env", "GOVERSION"))},
		{name: "cgo", got: boolString(env.Cgo), want: "true"},
		{name: "sdk path", got: env.SDK.Path, want: sdkPath},
		{name: "sdk version", got: env.SDK.Version, want: sdkRequirement(t, root(t))},
		{name: "sdk replace", got: env.SDK.Replace, want: "./sdk"},
		{name: "sdk compiled from", got: env.SDK.CompiledDir, want: filepath.Join(root(t), "sdk")},
		{name: "build flags", got: strings.Join(env.BuildFlags, " "), want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func mustRun(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	out, err := run(dir, nil, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
