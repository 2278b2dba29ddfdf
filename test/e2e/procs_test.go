package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func accepts(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is a started child process.
type proc struct {
	cmd    *exec.Cmd
	stdout lockedBuffer
	stderr lockedBuffer
	done   chan struct{}
	err    error // from Wait, valid once done is closed
}

func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process by its pid (SIGTERM, then SIGKILL) and waits.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// exitCode is the process's exit code, or -1 if a signal ended it.
func (p *proc) exitCode() int {
	<-p.done
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		return -1
	}
	return 0
}

// waitUntil polls cond until it holds, failing if p exits or time runs out.
func waitUntil(t *testing.T, p *proc, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if p.exited() {
			t.Fatalf("process exited (code %d) before %s\nstderr:\n%s", p.exitCode(), what, p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s\nstderr:\n%s", timeout, what, p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// redisServer is a private password-protected redis-server.
type redisServer struct {
	port     int
	password string
	proc     *proc
}

var (
	sharedRedisMu sync.Mutex
	sharedRedis   *redisServer
)

// theRedis returns the redis-server shared by all tests of this run.
func theRedis(t *testing.T) *redisServer {
	t.Helper()
	bin := need(t, "redis-server")
	need(t, "redis-cli")
	sharedRedisMu.Lock()
	defer sharedRedisMu.Unlock()
	if sharedRedis != nil {
		return sharedRedis
	}
	s := &redisServer{port: freePort(t), password: "pw-" + randomHex(t, 16)}
	dir, err := os.MkdirTemp(workDir, "redis-")
	if err != nil {
		t.Fatal(err)
	}
	s.proc = start(t, nil, bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--requirepass", s.password, "--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no")
	waitUntil(t, s.proc, "redis-server accepts connections", 10*time.Second, func() bool { return accepts(s.port) })
	sharedRedis = s
	return s
}

func stopSharedRedis() {
	sharedRedisMu.Lock()
	defer sharedRedisMu.Unlock()
	if sharedRedis != nil {
		sharedRedis.proc.stop()
		sharedRedis = nil
	}
}

// redisCLI runs redis-cli against port with no password.
func redisCLI(t *testing.T, port int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, need(t, "redis-cli"), append([]string{"-p", strconv.Itoa(port)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// fixture is a plugin directory, checksum file and config for one broker run.
type fixture struct {
	dir        string // test's scratch directory
	pluginDir  string
	sumFile    string
	configFile string
	listenPort int
}

// newFixture makes a plugin directory holding the redis plugin, a checksum
// file written by `sha256sum DIR/*`, and a config with one redis service.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), listenPort: freePort(t)}
	f.pluginDir = filepath.Join(f.dir, "plugins")
	if err := os.Mkdir(f.pluginDir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, redisPlugin(t), filepath.Join(f.pluginDir, "redis.so"))
	f.sumFile = filepath.Join(f.dir, "PLUGINS_SHA256SUM.txt")
	f.writeSums(t, `sha256sum "$1"/*`)
	f.writeConfig(t, f.redisConfig(6379))
	return f
}

// writeSums runs a shell script in the fixture directory, with $1 set to
// the plugin directory's absolute path, and writes its output to the sum file.
func (f *fixture) writeSums(t *testing.T, script string) {
	t.Helper()
	out := shell(t, f.dir, script, f.pluginDir)
	if err := os.WriteFile(f.sumFile, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) redisConfig(redisPort int) string {
	return fmt.Sprintf(`version: 2
services:
  redis:
    connector: redis
    listenOn: tcp://127.0.0.1:%d
    credentials:
      host: 127.0.0.1
      port: "%d"
      password:
        from: env
        get: REDIS_PASSWORD
`, f.listenPort, redisPort)
}

func (f *fixture) writeConfig(t *testing.T, yml string) {
	t.Helper()
	f.configFile = filepath.Join(f.dir, "secretless.yml")
	if err := os.WriteFile(f.configFile, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
}

// shell runs script with bash in the C locale (so globs sort bytewise), with
// args as $1...
func shell(t *testing.T, dir, script string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(need(t, "bash"), append([]string{"-c", script, "bash"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash -c %q: %v\n%s", script, err, stderr.String())
	}
	return out
}

// runBroker starts the broker on the fixture, with extra arguments after
// the standard ones.
func (f *fixture) runBroker(t *testing.T, password string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"-f", f.configFile, "-p", f.pluginDir, "-s", f.sumFile}, extra...)
	p := start(t, []string{"REDIS_PASSWORD=" + password}, brokerBin(t), args...)
	t.Cleanup(p.stop)
	return p
}

// expectRefusal waits for the broker to exit, checking all along that its
// listener never accepts a connection. It returns stderr.
func (f *fixture) expectRefusal(t *testing.T, p *proc) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !p.exited() {
		if accepts(f.listenPort) {
			t.Errorf("listener on port %d accepted a connection; want the broker to stop before opening it", f.listenPort)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker still running after 20s; want it to refuse to start\nstderr:\n%s", p.stderr.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	if code := p.exitCode(); code == 0 || code == -1 {
		t.Errorf("broker exit code = %d, want a non-zero exit code", code)
	}
	return p.stderr.String()
}

// ready reports whether the health server says /ready with 200.
func ready(port int) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
