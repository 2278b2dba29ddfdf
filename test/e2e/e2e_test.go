package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHappyPath: a client with no password talks to a password-protected
// redis-server through the broker and the example plugin.
func TestHappyPath(t *testing.T) {
	r := theRedis(t)
	f := newFixture(t)
	f.writeConfig(t, f.redisConfig(r.port))

	if got := redisCLI(t, r.port, "ping"); !strings.Contains(got, "NOAUTH") {
		t.Fatalf("redis-server without a password said %q; want NOAUTH, or this test proves nothing", got)
	}

	health := freePort(t)
	p := f.runBroker(t, r.password, "-debug", "-health-addr", "127.0.0.1:"+strconv.Itoa(health))
	waitUntil(t, p, "/ready answers 200", 20*time.Second, func() bool { return ready(health) })
	if !accepts(f.listenPort) {
		t.Fatalf("/ready is 200 but port %d does not accept connections", f.listenPort)
	}

	if got := redisCLI(t, f.listenPort, "ping"); got != "PONG" {
		t.Errorf("ping through the broker = %q, want PONG", got)
	}
	key, value := "e2e:"+randomHex(t, 4), "value "+randomHex(t, 8)
	if got := redisCLI(t, f.listenPort, "set", key, value); got != "OK" {
		t.Errorf("SET through the broker = %q, want OK", got)
	}
	if got := redisCLI(t, f.listenPort, "get", key); got != value {
		t.Errorf("GET through the broker = %q, want %q", got, value)
	}

	p.stop()
	if code := p.exitCode(); code != 0 {
		t.Errorf("broker exit code after SIGINT = %d, want 0", code)
	}
	if out := p.stdout.String() + p.stderr.String(); strings.Contains(out, r.password) {
		t.Errorf("the broker's output (with -debug) contains the redis password")
	}
	if t.Failed() {
		t.Logf("broker stderr:\n%s", p.stderr.String())
	}
}

// TestWrongPasswordThroughBroker: a login the target refuses reaches the
// client as a RESP error, the broker keeps serving, and the password shows
// up nowhere.
func TestWrongPasswordThroughBroker(t *testing.T) {
	r := theRedis(t)
	f := newFixture(t)
	f.writeConfig(t, f.redisConfig(r.port))
	wrong := "wrong-" + randomHex(t, 12)

	health := freePort(t)
	p := f.runBroker(t, wrong, "-debug", "-health-addr", "127.0.0.1:"+strconv.Itoa(health))
	waitUntil(t, p, "/ready answers 200", 20*time.Second, func() bool { return ready(health) })

	got := redisCLI(t, f.listenPort, "ping")
	t.Logf("client got: %s", got)
	if !strings.HasPrefix(got, "ERR ") || !strings.Contains(got, "WRONGPASS") {
		t.Errorf("ping with a wrong broker password = %q, want an ERR reply mentioning WRONGPASS", got)
	}
	if strings.Contains(got, wrong) {
		t.Errorf("the client's error reveals the password: %q", got)
	}
	if p.exited() {
		t.Fatalf("broker exited after one failed login\nstderr:\n%s", p.stderr.String())
	}
	p.stop()
	if out := p.stdout.String() + p.stderr.String(); strings.Contains(out, wrong) {
		t.Errorf("the broker's output (with -debug) contains the password:\n%s", out)
	}
	if !strings.Contains(p.stderr.String(), "WRONGPASS") {
		t.Errorf("the broker log does not say why the login failed:\n%s", p.stderr.String())
	}
}

// digestOf is the hex SHA-256 of a file.
func digestOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestBadPluginsStopStartup: every plugin-directory problem makes the broker
// exit non-zero before its listener opens, naming the file and the reason,
// and `plugins verify` fails on it too.
func TestBadPluginsStopStartup(t *testing.T) {
	tests := []struct {
		name string
		// setup breaks the fixture; it returns digests that stderr must
		// show (may be nil).
		setup      func(t *testing.T, f *fixture) []string
		wantFile   string
		wantReason *regexp.Regexp
	}{
		{
			name: "one byte changed in the plugin",
			setup: func(t *testing.T, f *fixture) []string {
				so := filepath.Join(f.pluginDir, "redis.so")
				before := digestOf(t, so)
				b, err := os.ReadFile(so)
				if err != nil {
					t.Fatal(err)
				}
				b[len(b)/2] ^= 0x01
				if err := os.WriteFile(so, b, 0o644); err != nil {
					t.Fatal(err)
				}
				return []string{before, digestOf(t, so)}
			},
			wantFile:   "redis.so",
			wantReason: regexp.MustCompile(`(?i)modified`),
		},
		{
			name: "unlisted .so file in the directory",
			setup: func(t *testing.T, f *fixture) []string {
				extra := filepath.Join(f.pluginDir, "extra.so")
				if err := os.WriteFile(extra, []byte("not listed "+randomHex(t, 8)), 0o644); err != nil {
					t.Fatal(err)
				}
				return []string{digestOf(t, extra)}
			},
			wantFile:   "extra.so",
			wantReason: regexp.MustCompile(`(?i)unexpected`),
		},
		{
			name: "unlisted non-plugin file in the directory",
			setup: func(t *testing.T, f *fixture) []string {
				if err := os.WriteFile(filepath.Join(f.pluginDir, "README.txt"), []byte("notes\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return nil
			},
			wantFile:   "README.txt",
			wantReason: regexp.MustCompile(`(?i)unexpected`),
		},
		{
			name: "listed plugin removed",
			setup: func(t *testing.T, f *fixture) []string {
				gone := filepath.Join(f.pluginDir, "gone.so")
				if err := os.WriteFile(gone, []byte("soon gone "+randomHex(t, 8)), 0o644); err != nil {
					t.Fatal(err)
				}
				f.writeSums(t, `sha256sum "$1"/*`)
				d := digestOf(t, gone)
				if err := os.Remove(gone); err != nil {
					t.Fatal(err)
				}
				return []string{d}
			},
			wantFile:   "gone.so",
			wantReason: regexp.MustCompile(`(?i)missing`),
		},
		{
			name: "same plugin under two names",
			setup: func(t *testing.T, f *fixture) []string {
				copyFile(t, redisPlugin(t), filepath.Join(f.pluginDir, "redis-copy.so"))
				f.writeSums(t, `sha256sum "$1"/*`)
				return nil
			},
			wantFile:   "redis-copy.so",
			wantReason: regexp.MustCompile(`(?i)duplicate|identical|same`),
		},
		{
			name: "plugin built with -trimpath",
			setup: func(t *testing.T, f *fixture) []string {
				copyFile(t, trimpathPlugin(t), filepath.Join(f.pluginDir, "redis.so"))
				f.writeSums(t, `sha256sum "$1"/*`)
				return nil
			},
			wantFile:   "redis.so",
			wantReason: regexp.MustCompile(`(?i)incompatible|different version of package`),
		},
		{
			name: "non-Go shared library",
			setup: func(t *testing.T, f *fixture) []string {
				copyFile(t, nonGoLibrary(t), filepath.Join(f.pluginDir, "x.so"))
				f.writeSums(t, `sha256sum "$1"/*`)
				return nil
			},
			wantFile:   "x.so",
			wantReason: regexp.MustCompile(`(?i)not a Go plugin`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			digests := tt.setup(t, f)

			stderr := f.expectRefusal(t, f.runBroker(t, "unused", "-health-addr", ""))
			if !strings.Contains(stderr, tt.wantFile) {
				t.Errorf("stderr does not name %s", tt.wantFile)
			}
			if !tt.wantReason.MatchString(stderr) {
				t.Errorf("stderr does not match %v", tt.wantReason)
			}
			for _, d := range digests {
				if !strings.Contains(strings.ToLower(stderr), d) {
					t.Errorf("stderr does not show digest %s", d)
				}
			}
			t.Logf("broker stderr:\n%s", stderr)

			v := runCLI(t, "", "plugins", "verify", "-p", f.pluginDir, "-s", f.sumFile)
			if v.code == 0 {
				t.Errorf("plugins verify exit code 0, want non-zero\nstdout:\n%s", v.stdout)
			}
			if !strings.Contains(v.stdout+v.stderr, tt.wantFile) {
				t.Errorf("plugins verify does not name %s\nstdout:\n%s\nstderr:\n%s", tt.wantFile, v.stdout, v.stderr)
			}
		})
	}
}

// TestChecksumFileForms: checksum files in every form sha256sum writes are
// accepted by the broker and by `plugins verify`.
func TestChecksumFileForms(t *testing.T) {
	tests := []struct {
		name   string
		script string // run in the fixture directory; $1 is the absolute plugin dir
	}{
		{name: "text mode full paths", script: `sha256sum "$1"/*`},
		{name: "binary mode full paths", script: `sha256sum -b "$1"/*`},
		{name: "bsd tag full paths", script: `sha256sum --tag "$1"/*`},
		{name: "text mode bare names", script: `cd "$1" && sha256sum *`},
		{name: "binary mode bare names", script: `cd "$1" && sha256sum -b *`},
		{name: "bsd tag bare names", script: `cd "$1" && sha256sum --tag *`},
		{name: "relative paths", script: `sha256sum plugins/*`},
		{name: "dot slash names", script: `cd "$1" && sha256sum ./*`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.writeSums(t, tt.script)
			sums, _ := os.ReadFile(f.sumFile)

			if v := runCLI(t, "", "plugins", "verify", "-p", f.pluginDir, "-s", f.sumFile); v.code != 0 {
				t.Errorf("plugins verify exit code %d, want 0\nchecksum file:\n%s\nstdout:\n%s\nstderr:\n%s", v.code, sums, v.stdout, v.stderr)
			}

			health := freePort(t)
			p := f.runBroker(t, "unused", "-health-addr", "127.0.0.1:"+strconv.Itoa(health))
			deadline := time.Now().Add(20 * time.Second)
			for !ready(health) {
				if p.exited() || time.Now().After(deadline) {
					p.stop()
					t.Fatalf("broker did not become ready (exit code %d)\nchecksum file:\n%s\nstderr:\n%s", p.exitCode(), sums, p.stderr.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestPluginsSum: `plugins sum DIR` prints exactly what `sha256sum DIR/*` does.
func TestPluginsSum(t *testing.T) {
	f := newFixture(t)
	if err := os.Remove(filepath.Join(f.pluginDir, "redis.so")); err != nil {
		t.Fatal(err)
	}
	copyFile(t, redisPlugin(t), filepath.Join(f.pluginDir, "a.so"))
	copyFile(t, trimpathPlugin(t), filepath.Join(f.pluginDir, "b.so"))

	tests := []struct {
		name string
		dir  string // as given on the command line, relative to f.dir
	}{
		{name: "absolute dir", dir: f.pluginDir},
		{name: "relative dir", dir: "plugins"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := string(shell(t, f.dir, `sha256sum "$1"/*`, tt.dir))
			got := runCLI(t, f.dir, "plugins", "sum", tt.dir)
			if got.code != 0 {
				t.Fatalf("plugins sum exit code %d\nstderr:\n%s", got.code, got.stderr)
			}
			if got.stdout != want {
				t.Errorf("plugins sum %s printed\n%s\nwant (sha256sum %s/*)\n%s", tt.dir, got.stdout, tt.dir, want)
			}
		})
	}
}

// TestPluginsVerify: a good directory verifies, a changed one does not.
func TestPluginsVerify(t *testing.T) {
	tests := []struct {
		name   string
		modify bool
		ok     bool
	}{
		{name: "intact", ok: true},
		{name: "modified", modify: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.modify {
				so := filepath.Join(f.pluginDir, "redis.so")
				b, err := os.ReadFile(so)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(so, append(b, 0), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			v := runCLI(t, "", "plugins", "verify", "-p", f.pluginDir, "-s", f.sumFile)
			if (v.code == 0) != tt.ok {
				t.Errorf("plugins verify exit code %d, want success %v\nstdout:\n%s\nstderr:\n%s", v.code, tt.ok, v.stdout, v.stderr)
			}
		})
	}
}

// TestConfigErrors: each config mistake stops the broker before its
// listener opens, and fails `validate`, with the key path in stderr.
func TestConfigErrors(t *testing.T) {
	// validate runs with this environment, as runBroker sets it for the
	// broker: an unset credential variable would be an error of its own.
	t.Setenv("REDIS_PASSWORD", "unused")
	const head = "version: 2\nservices:\n"
	// svc renders one redis service; extra lines are indented under it.
	svc := func(name, listenOn, connector, credentials string, extra ...string) string {
		s := fmt.Sprintf("  %s:\n    connector: %s\n    listenOn: %s\n    credentials:\n", name, connector, listenOn)
		if credentials == "" {
			credentials = "      host: 127.0.0.1\n      password:\n        from: env\n        get: REDIS_PASSWORD\n"
		}
		s += credentials
		for _, e := range extra {
			s += "    " + e + "\n"
		}
		return s
	}
	tests := []struct {
		name     string
		config   func(port int) string
		wantPath *regexp.Regexp
	}{
		{
			name:     "unknown key",
			config:   func(p int) string { return head + svc("redis", tcp(p), "redis", "", "colour: blue") },
			wantPath: regexp.MustCompile(`services\.redis\.colour`),
		},
		{
			name:     "unknown connector",
			config:   func(p int) string { return head + svc("redis", tcp(p), "nosuch", "") },
			wantPath: regexp.MustCompile(`services\.redis\.connector`),
		},
		{
			name: "unknown provider",
			config: func(p int) string {
				return head + svc("redis", tcp(p), "redis", "      host: 127.0.0.1\n      password:\n        from: nosuch\n        get: X\n")
			},
			wantPath: regexp.MustCompile(`services\.redis\.credentials\.password`),
		},
		{
			name:     "listenOn without scheme",
			config:   func(p int) string { return head + svc("redis", "127.0.0.1:"+strconv.Itoa(p), "redis", "") },
			wantPath: regexp.MustCompile(`services\.redis\.listenOn`),
		},
		{
			name:     "listenOn port out of range",
			config:   func(int) string { return head + svc("redis", "tcp://127.0.0.1:70000", "redis", "") },
			wantPath: regexp.MustCompile(`services\.redis\.listenOn`),
		},
		{
			name: "two services on the same address",
			config: func(p int) string {
				return head + svc("first", tcp(p), "redis", "") + svc("second", tcp(p), "redis", "")
			},
			wantPath: regexp.MustCompile(`services\.(first|second)\.listenOn`),
		},
		{
			name: "credential variable not set",
			config: func(p int) string {
				return head + svc("redis", tcp(p), "redis", "      host: 127.0.0.1\n      password:\n        from: env\n        get: SECRETLESS_E2E_UNSET\n")
			},
			wantPath: regexp.MustCompile(`services\.redis\.credentials\.password: from env: environment variable is not set: SECRETLESS_E2E_UNSET`),
		},
		{
			name: "from without get",
			config: func(p int) string {
				return head + svc("redis", tcp(p), "redis", "      host: 127.0.0.1\n      password:\n        from: env\n")
			},
			wantPath: regexp.MustCompile(`services\.redis\.credentials\.password`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.writeConfig(t, tt.config(f.listenPort))

			stderr := f.expectRefusal(t, f.runBroker(t, "unused", "-health-addr", ""))
			t.Logf("broker stderr:\n%s", stderr)
			if !tt.wantPath.MatchString(stderr) {
				t.Errorf("broker stderr does not match %v\nconfig:\n%s\nstderr:\n%s", tt.wantPath, tt.config(f.listenPort), stderr)
			}

			v := runCLI(t, "", "validate", "-f", f.configFile, "-p", f.pluginDir, "-s", f.sumFile)
			if v.code == 0 {
				t.Errorf("validate exit code 0, want non-zero\nstdout:\n%s", v.stdout)
			}
			if !tt.wantPath.MatchString(v.stderr) {
				t.Errorf("validate stderr does not match %v\nstderr:\n%s", tt.wantPath, v.stderr)
			}
		})
	}

	t.Run("valid config validates", func(t *testing.T) {
		f := newFixture(t)
		v := runCLI(t, "", "validate", "-f", f.configFile, "-p", f.pluginDir, "-s", f.sumFile)
		if v.code != 0 {
			t.Errorf("validate exit code %d, want 0\nstdout:\n%s\nstderr:\n%s", v.code, v.stdout, v.stderr)
		}
	})
}

func tcp(port int) string { return "tcp://127.0.0.1:" + strconv.Itoa(port) }

type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the broker binary to completion (10 s at most) in dir.
func runCLI(t *testing.T, dir string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(brokerBin(t), args...)
	cmd.Dir = dir
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("secretless-broker %s did not finish in 10s", strings.Join(args, " "))
	}
	r := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}
