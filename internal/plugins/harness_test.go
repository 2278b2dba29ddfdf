package plugins

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Test plugins are built for real with "go build -buildmode=plugin", once
// per test run, into buildRoot. Plugins that are opened in this process are
// built like the test binary: from this checkout, without -trimpath, and
// with -race exactly when the test binary has it (raceEnabled).

var buildRoot string // set by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "plugins-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildRoot = dir
	code := m.Run()
	// The built files are 0500 inside writable dirs; RemoveAll copes.
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireIntegration makes missing gcc or cgo a failure instead of a skip.
func requireIntegration() bool { return os.Getenv("SECRETLESS_REQUIRE_INTEGRATION") == "1" }

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if requireIntegration() {
		t.Fatalf("SECRETLESS_REQUIRE_INTEGRATION=1 but %s", msg)
	}
	t.Skip(msg)
}

// buildJob describes one artifact.
type buildJob struct {
	name string   // output file name in buildRoot
	dir  string   // working directory ("" = this package's directory)
	args []string // go build arguments before the package
	pkg  string   // package to build
	env  []string // extra environment
	race bool     // add -race when the test binary has it
}

var built struct {
	once  sync.Once
	files map[string]string
	err   error
}

// artifact returns the path of a built test artifact, building all of them
// on first use.
func artifact(t *testing.T, name string) string {
	t.Helper()
	needToolchain(t)
	built.once.Do(func() { built.files, built.err = buildAll() })
	if built.err != nil {
		t.Fatalf("building test plugins: %v", built.err)
	}
	p, ok := built.files[name]
	if !ok {
		t.Fatalf("no test artifact %q", name)
	}
	return p
}

func needToolchain(t *testing.T) {
	t.Helper()
	if !CgoEnabled {
		skipOrFail(t, "the test binary was built with CGO_ENABLED=0, so plugins cannot be opened")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		skipOrFail(t, "no go command: %v", err)
	}
	out, err := exec.Command(goBin, "env", "GOVERSION", "CC").Output()
	if err != nil {
		skipOrFail(t, "go env: %v", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) < 2 {
		skipOrFail(t, "go env printed %q", out)
	}
	if lines[0] != runtime.Version() {
		skipOrFail(t, "go command is %s but the test binary is %s", lines[0], runtime.Version())
	}
	if _, err := exec.LookPath(lines[1]); err != nil {
		skipOrFail(t, "no C compiler %q for cgo: %v", lines[1], err)
	}
}

func buildAll() (map[string]string, error) {
	start := time.Now()
	modA, err := copyTree("testdata/modcopy", filepath.Join(buildRoot, "src", "modA"))
	if err != nil {
		return nil, err
	}
	modB, err := copyTree("testdata/modcopy", filepath.Join(buildRoot, "src", "modB"))
	if err != nil {
		return nil, err
	}
	sdkMod, err := sdkCopyModule(filepath.Join(buildRoot, "src", "sdkcopy"))
	if err != nil {
		return nil, err
	}
	plugin := []string{"-buildmode=plugin"}
	var jobs []buildJob
	for _, p := range []string{
		"tcpgood", "httpgood", "swaporig", "ordering", "dupid", "badsymbol", "wrongtype", "noinfo",
		"missingkey", "badversion", "badtype", "badid", "panicinit", "panicinfo", "panicget", "nilplugin",
	} {
		jobs = append(jobs, buildJob{name: p + ".so", args: plugin, pkg: "./testdata/plugins/" + p, race: true})
	}
	noVCS := []string{"GOWORK=off", "GOFLAGS=-buildvcs=false"}
	jobs = append(jobs,
		// Same package as tcpgood, different bytes, same fingerprints.
		buildJob{name: "tcpgood-variant.so", args: append(plugin, "-ldflags=-X main.variant=variant"), pkg: "./testdata/plugins/tcpgood", race: true},
		// Opposite -trimpath: every package differs. (pa imports little, so
		// a cold build cache recompiles only the runtime for it.)
		buildJob{name: "trimpath.so", dir: modA, args: append(plugin, "-trimpath"), pkg: "./pa", env: noVCS, race: true},
		// The SDK from another directory: only the SDK packages differ.
		buildJob{name: "sdkcopy.so", dir: sdkMod, args: plugin, pkg: "./p", env: noVCS, race: true},
		// helper from two directories: pa and pb disagree with each other.
		buildJob{name: "pa.so", dir: modA, args: plugin, pkg: "./pa", env: noVCS, race: true},
		buildJob{name: "pb.so", dir: modB, args: plugin, pkg: "./pb", env: noVCS, race: true},
		// Go programs that are not plugins.
		buildJob{name: "pie.so", args: []string{"-buildmode=pie"}, pkg: "./testdata/exe/pie", race: false},
		buildJob{name: "static.so", pkg: "./testdata/exe/static", race: false},
	)

	files := map[string]string{}
	var mu sync.Mutex
	var errs []string
	sem := make(chan struct{}, 2*runtime.NumCPU())
	var wg sync.WaitGroup
	for _, j := range jobs {
		out := filepath.Join(buildRoot, j.name)
		files[j.name] = out
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			t0 := time.Now()
			defer func() {
				if os.Getenv("PLUGINS_TEST_TIMING") != "" {
					fmt.Fprintf(os.Stderr, "  %s: %v\n", j.name, time.Since(t0).Round(time.Millisecond))
				}
			}()
			if err := goBuild(j, out); err != nil {
				mu.Lock()
				errs = append(errs, err.Error())
				mu.Unlock()
			}
		}()
	}
	native := filepath.Join(buildRoot, "native.so")
	files["native.so"] = native
	if out, err := exec.Command(ccCommand(), "-shared", "-fPIC", "-o", native, "testdata/native/native.c").CombinedOutput(); err != nil {
		errs = append(errs, fmt.Sprintf("cc -shared: %v\n%s", err, out))
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	fmt.Fprintf(os.Stderr, "built %d test plugins in %v (race=%v)\n", len(jobs)+1, time.Since(start).Round(time.Millisecond), raceEnabled)
	return files, nil
}

func ccCommand() string {
	out, err := exec.Command("go", "env", "CC").Output()
	if cc := strings.TrimSpace(string(out)); err == nil && cc != "" {
		return strings.Fields(cc)[0]
	}
	return "gcc"
}

func goBuild(j buildJob, out string) error {
	args := []string{"build", "-o", out}
	if j.race && raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, j.args...)
	args = append(args, j.pkg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = j.dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	cmd.Env = append(cmd.Env, j.env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s (in %q): %v\n%s", strings.Join(args, " "), j.dir, err, b)
	}
	return nil
}

// copyTree copies the regular files under src to dst.
func copyTree(src, dst string) (string, error) {
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	return dst, err
}

// sdkCopyModule makes a module that builds testdata/plugins/tcpgood against
// a copy of the SDK in another directory.
func sdkCopyModule(dst string) (string, error) {
	if _, err := copyTree("../../sdk", filepath.Join(dst, "sdk")); err != nil {
		return "", err
	}
	if _, err := copyTree("testdata/plugins/tcpgood", filepath.Join(dst, "p")); err != nil {
		return "", err
	}
	gomod := "module example.com/sdkcopy\n\ngo 1.26\n\n" +
		"require github.com/secretless-broker/secretless-broker/sdk v0.0.0\n\n" +
		"replace github.com/secretless-broker/secretless-broker/sdk => ./sdk\n"
	return dst, os.WriteFile(filepath.Join(dst, "go.mod"), []byte(gomod), 0o644)
}

// pluginDir makes a plugin directory holding copies of artifacts:
// files maps the name in the directory to the artifact name.
func pluginDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, art := range files {
		copyFile(t, artifact(t, art), filepath.Join(dir, name))
	}
	return dir
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// sha256sum runs the real sha256sum binary in dir with args and returns
// its output.
func sha256sum(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("sha256sum"); err != nil {
		skipOrFail(t, "no sha256sum binary: %v", err)
	}
	cmd := exec.Command("sha256sum", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sha256sum %q: %v\n%s", args, err, stderr.String())
	}
	return out
}

// writeSums writes "sha256sum <names...>" run in dir to a new checksum file.
func writeSums(t *testing.T, dir string, args ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "PLUGINS_SHA256SUM.txt")
	if err := os.WriteFile(path, sha256sum(t, dir, args...), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// soNames lists the *.so names in dir.
func soNames(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.so"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

// recorder is a slog.Handler that keeps every record.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// find returns the attributes of records at level whose message contains msg.
func (r *recorder) find(level slog.Level, msg string) []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, rec := range r.records {
		if rec.Level != level || !strings.Contains(rec.Message, msg) {
			continue
		}
		attrs := map[string]string{}
		rec.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		out = append(out, attrs)
	}
	return out
}

var _ slog.Handler = (*recorder)(nil)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
