// Package plugindocs checks the plugin author's documentation and examples
// against reality: it runs the shell blocks of docs/plugins/ and of the
// example READMEs the way a reader would (in order, in a fresh directory
// outside the repository), compares docs/plugins/sdk-reference.md with
// "go doc", builds the out-of-tree example module and the ported Secretless
// plugin with the plain commands the docs give, and runs them in a broker
// built the way the README builds it.
//
// Tools it needs: go, gcc, bash, sha256sum, curl, redis-server and
// redis-cli. A missing tool skips the tests that need it, unless
// SECRETLESS_REQUIRE_INTEGRATION=1, which turns every such skip into a
// failure. -short skips everything that builds.
package plugindocs

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// work is the directory every test of this run works in, outside the
// repository: the docs' $WORK.
var work string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "secretless-plugindocs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Resolve symlinks (a /tmp symlink would make $WORK differ from the
	// paths tools print).
	if d, err = filepath.EvalSymlinks(d); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	work = d
	code := m.Run()
	killGroups()
	_ = os.RemoveAll(work)
	os.Exit(code)
}

func requireIntegration() bool { return os.Getenv("SECRETLESS_REQUIRE_INTEGRATION") == "1" }

// need returns a tool's path, or skips the test (fails it under
// SECRETLESS_REQUIRE_INTEGRATION=1) when the tool is missing. It also
// implements -short.
func need(t *testing.T, names ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the broker and plugins; skipped with -short")
	}
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if requireIntegration() {
				t.Fatalf("%s not found and SECRETLESS_REQUIRE_INTEGRATION=1: %v", name, err)
			}
			t.Skipf("%s not found: %v", name, err)
		}
	}
}

// once runs a step at most once per test binary and remembers its outcome.
type once struct {
	sync.Once
	err error
}

func (o *once) do(t *testing.T, f func() error) {
	t.Helper()
	o.Do(func() { o.err = f() })
	if o.err != nil {
		t.Fatal(o.err)
	}
}

var rootOnce, brokerOnce once
var repoRoot string

// root is the repository root (the broker module's directory).
func root(t *testing.T) string {
	t.Helper()
	need(t, "go")
	rootOnce.do(t, func() error {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			return fmt.Errorf("go env GOMOD: %w", err)
		}
		mod := strings.TrimSpace(string(out))
		if mod == "" || mod == os.DevNull {
			return errors.New("not inside the broker's module")
		}
		repoRoot = filepath.Dir(mod)
		return nil
	})
	return repoRoot
}

// broker builds the broker the way the README does (cgo, no other flags)
// into $WORK/bin, where the docs build it too, and returns its path.
func broker(t *testing.T) string {
	t.Helper()
	need(t, "go", "gcc")
	bin := filepath.Join(work, "bin", "secretless-broker")
	brokerOnce.do(t, func() error {
		_, err := run(root(t), nil, "go", "build", "-o", bin, "./cmd/secretless-broker")
		return err
	})
	return bin
}

// run runs a command in dir with CGO_ENABLED=1 and extra environment, and
// returns its combined output.
func run(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=1"), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return string(out), nil
}

// groups are the process groups of the shell blocks and brokers started by
// this run; whatever is left of them is killed at the end.
var (
	groupsMu sync.Mutex
	groups   []int
)

func addGroup(pgid int) {
	groupsMu.Lock()
	defer groupsMu.Unlock()
	groups = append(groups, pgid)
}

func killGroups() {
	groupsMu.Lock()
	defer groupsMu.Unlock()
	for _, g := range groups {
		_ = syscall.Kill(-g, syscall.SIGKILL)
	}
	groups = nil
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

// proc is a started broker.
type proc struct {
	cmd    *exec.Cmd
	output lockedBuffer
	done   chan struct{}
}

// start runs a command with extra environment in its own process group
// and stops it when the test ends.
func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.output, &p.output
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addGroup(p.cmd.Process.Pid)
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
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

// waitListening waits until addr accepts connections, failing if p exits.
func (p *proc) waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		if p.exited() {
			t.Fatalf("broker exited before listening on %s:\n%s", addr, p.output.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker not listening on %s after 30s:\n%s", addr, p.output.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
