package plugins

import (
	"errors"
	"log/slog"
	"net"
	gohttp "net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/log"
)

// Plugins cannot be unloaded and a package path can be opened only once per
// process, so every test that makes Load open a plugin for the first time
// uses a plugin of its own; Load reuses what it opened before when the same
// bytes come again.

type resources struct{}

func (resources) Config() []byte     { return nil }
func (resources) Logger() log.Logger { return nil }

var _ connector.Resources = resources{}

// withChecksums makes a plugin directory and its checksum file.
func withChecksums(t *testing.T, files map[string]string) Options {
	t.Helper()
	dir := pluginDir(t, files)
	return Options{Dir: dir, ChecksumFile: writeSums(t, dir, soNames(t, dir)...), Logger: discard()}
}

func TestLoad(t *testing.T) {
	rec := &recorder{}
	opts := withChecksums(t, map[string]string{"tcpgood.so": "tcpgood.so", "httpgood.so": "httpgood.so"})
	opts.Logger = slog.New(rec)
	opts.Reserved = []string{"pg", "mysql"}
	opts.TempDir = t.TempDir()
	got, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("loaded %d plugins, want 2: %+v", len(got), got)
	}
	h, tc := got[0], got[1] // sorted by file name
	t.Run("http plugin", func(t *testing.T) {
		if h.File != "httpgood.so" || h.ID != "test-http" || h.Type != sdk.TypeHTTPConnector || h.APIVersion != sdk.PluginAPIVersion || h.Description != "test plugin test-http" {
			t.Errorf("got %+v", h)
		}
		if h.HTTP == nil || h.TCP != nil {
			t.Fatalf("HTTP %v TCP %v", h.HTTP, h.TCP)
		}
		req, _ := gohttp.NewRequest("GET", "http://example.com/", nil)
		if err := h.HTTP.NewConnector(resources{}).Connect(req, nil); err != nil {
			t.Fatal(err)
		}
		if req.Header.Get("X-Test-Plugin") != "yes" {
			t.Errorf("the plugin's connector did not run: headers %v", req.Header)
		}
	})
	t.Run("tcp plugin", func(t *testing.T) {
		if tc.File != "tcpgood.so" || tc.ID != "test-tcp" || tc.Type != sdk.TypeTCPConnector || tc.Path != filepath.Join(opts.Dir, "tcpgood.so") {
			t.Errorf("got %+v", tc)
		}
		if tc.TCP == nil || tc.HTTP != nil {
			t.Fatalf("TCP %v HTTP %v", tc.TCP, tc.HTTP)
		}
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		conn, err := tc.TCP.NewConnector(resources{}).Connect(a, nil)
		if err != nil || conn != a {
			t.Errorf("Connect = %v, %v", conn, err)
		}
		if tc.Digest != fileDigest(t, tc.Path) {
			t.Errorf("digest %s, file has %s", tc.Digest, fileDigest(t, tc.Path))
		}
	})
	t.Run("logs", func(t *testing.T) {
		loaded := rec.find(slog.LevelInfo, "plugin loaded")
		if len(loaded) != 2 {
			t.Fatalf("%d 'plugin loaded' lines, want 2", len(loaded))
		}
		want := map[string]string{"file": "tcpgood.so", "id": "test-tcp", "type": sdk.TypeTCPConnector, "digest": tc.Digest}
		for k, v := range want {
			if loaded[1][k] != v {
				t.Errorf("log attr %s = %q, want %q", k, loaded[1][k], v)
			}
		}
		if n := len(rec.find(slog.LevelInfo, "plugin verified")); n != 2 {
			t.Errorf("%d 'plugin verified' lines, want 2", n)
		}
		if w := rec.find(slog.LevelWarn, ""); len(w) != 0 {
			t.Errorf("unexpected warnings %v", w)
		}
	})
	t.Run("copies removed", func(t *testing.T) {
		ents, err := os.ReadDir(opts.TempDir)
		if err != nil || len(ents) != 0 {
			t.Errorf("temp dir holds %v (%v)", ents, err)
		}
	})
	t.Run("load again", func(t *testing.T) {
		again, err := Load(opts)
		if err != nil {
			t.Fatalf("second Load: %v", err)
		}
		if len(again) != 2 || again[1].ID != "test-tcp" || again[1].TCP == nil || again[0].HTTP == nil {
			t.Errorf("second Load = %+v", again)
		}
	})
	t.Run("changed build of a loaded plugin", func(t *testing.T) {
		o := withChecksums(t, map[string]string{"tcpgood.so": "tcpgood-variant.so"})
		_, err := Verify(o)
		checkErr(t, err, []error{ErrAlreadyLoaded}, []string{`plugin "tcpgood.so" (sha256 `, "was already loaded into this process from other bytes", "needs a broker restart"})
	})
}

func TestLoadWithoutChecksumFile(t *testing.T) {
	rec := &recorder{}
	dir := pluginDir(t, map[string]string{"tcpgood.so": "tcpgood.so"})
	writeFile(t, filepath.Join(dir, "README"), "x")
	if err := os.Mkdir(filepath.Join(dir, "sub.so"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := Load(Options{Dir: dir, Logger: slog.New(rec)})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(got) != 1 || got[0].ID != "test-tcp" {
		t.Fatalf("got %+v", got)
	}
	if w := rec.find(slog.LevelWarn, "PLUGIN CHECKSUMS ARE NOT VERIFIED: no checksum file given, so tampering with plugin files cannot be detected"); len(w) != 1 {
		t.Errorf("%d loud warnings about tampering, want 1: %v", len(w), rec.records)
	}
	if v := rec.find(slog.LevelInfo, "plugin verified"); len(v) != 0 {
		t.Errorf("a plugin is said to be verified without a checksum file: %v", v)
	}
	if c := rec.find(slog.LevelInfo, "plugin checked, not verified (no checksum file)"); len(c) != 1 {
		t.Errorf("%d 'checked, not verified' lines, want 1", len(c))
	}
	ignored := rec.find(slog.LevelWarn, "ignoring entry in plugin directory")
	if len(ignored) != 2 || ignored[0]["entry"] != "README" || ignored[1]["entry"] != "sub.so" {
		t.Errorf("ignored entries logged: %v", ignored)
	}
}

func TestLoadNothing(t *testing.T) {
	got, err := Load(Options{Dir: filepath.Join(t.TempDir(), "none"), Logger: discard()})
	if err != nil || got != nil {
		t.Errorf("Load of a missing directory without checksum file = %v, %v", got, err)
	}
	got, err = Load(Options{Logger: discard()})
	if err != nil || got != nil {
		t.Errorf("Load with no options = %v, %v", got, err)
	}
}

func TestLoadFailures(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		reserved []string
		wantIs   []error
		wantMsg  []string
	}{
		{name: "missing GetTCPPlugin", files: map[string]string{"badsymbol.so": "badsymbol.so"},
			wantIs: []error{ErrBadSymbol}, wantMsg: []string{`plugin "badsymbol.so": does not export GetTCPPlugin (plugin: symbol GetTCPPlugin not found`}},
		{name: "wrong GetTCPPlugin type", files: map[string]string{"wrongtype.so": "wrongtype.so"},
			wantIs: []error{ErrBadSymbol}, wantMsg: []string{`plugin "wrongtype.so": symbol GetTCPPlugin has type func() http.Plugin, want func() tcp.Plugin`}},
		{name: "missing PluginInfo", files: map[string]string{"noinfo.so": "noinfo.so"},
			wantIs: []error{ErrBadSymbol}, wantMsg: []string{`plugin "noinfo.so": does not export PluginInfo`}},
		{name: "missing info key", files: map[string]string{"missingkey.so": "missingkey.so"},
			wantIs: []error{ErrBadInfo}, wantMsg: []string{`plugin "missingkey.so": PluginInfo() is missing key(s) description`}},
		{name: "unsupported API version", files: map[string]string{"badversion.so": "badversion.so"},
			wantIs: []error{ErrBadInfo}, wantMsg: []string{`plugin "badversion.so": unsupported pluginAPIVersion "9.9.9", this broker supports 0.1.0`}},
		{name: "unknown type", files: map[string]string{"badtype.so": "badtype.so"},
			wantIs: []error{ErrBadInfo}, wantMsg: []string{`plugin "badtype.so": unknown type "connector.udp", want one of connector.http, connector.tcp`}},
		{name: "invalid id", files: map[string]string{"badid.so": "badid.so"},
			wantIs: []error{ErrBadInfo}, wantMsg: []string{`plugin "badid.so": invalid id "Bad ID!", want ^[a-z0-9_:.-]+$`}},
		{name: "reserved id", files: map[string]string{"tcpgood.so": "tcpgood.so"}, reserved: []string{"pg", "test-tcp"},
			wantIs: []error{ErrIDConflict}, wantMsg: []string{`plugin "tcpgood.so" has id "test-tcp", which is a built-in connector`}},
		{name: "duplicate id", files: map[string]string{"tcpgood.so": "tcpgood.so", "dupid.so": "dupid.so"},
			wantIs: []error{ErrIDConflict}, wantMsg: []string{`plugins "dupid.so" and "tcpgood.so" both have id "test-tcp"`}},
		{name: "panic in PluginInfo", files: map[string]string{"panicinfo.so": "panicinfo.so"},
			wantIs: []error{ErrPluginPanic}, wantMsg: []string{`plugin "panicinfo.so": panic in PluginInfo: boom in PluginInfo`}},
		{name: "panic in GetTCPPlugin", files: map[string]string{"panicget.so": "panicget.so"},
			wantIs: []error{ErrPluginPanic}, wantMsg: []string{`plugin "panicget.so": panic in GetTCPPlugin: boom in GetTCPPlugin`}},
		{name: "nil plugin", files: map[string]string{"nilplugin.so": "nilplugin.so"},
			wantIs: []error{ErrBadSymbol}, wantMsg: []string{`plugin "nilplugin.so": GetTCPPlugin returned nil`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := withChecksums(t, tt.files)
			opts.Reserved = tt.reserved
			got, err := Load(opts)
			if got != nil {
				t.Errorf("Load returned plugins with an error: %+v", got)
			}
			checkErr(t, err, tt.wantIs, tt.wantMsg)
		})
	}
}

// TestLoadPanicInInit also checks that a second Load of the same bytes
// returns the first error instead of reopening (which would hang).
func TestLoadPanicInInit(t *testing.T) {
	opts := withChecksums(t, map[string]string{"panicinit.so": "panicinit.so"})
	for _, attempt := range []string{"first", "second"} {
		t.Run(attempt, func(t *testing.T) {
			_, err := Load(opts)
			checkErr(t, err, []error{ErrPluginPanic}, []string{`plugin "panicinit.so" (sha256 `, "panic in init: boom in init"})
			if attempt == "second" && !strings.Contains(err.Error(), "already failed to open in this process") {
				t.Errorf("second error does not mention the earlier failure: %v", err)
			}
		})
	}
}

// TestLoadVerifiesEverythingFirst: a bad file sorted after a good one keeps
// the good one from being opened.
func TestLoadVerifiesEverythingFirst(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) string
		wantIs  error
	}{
		{name: "second file not a plugin", prepare: func(t *testing.T, dir string) string {
			copyFile(t, artifact(t, "native.so"), filepath.Join(dir, "zz.so"))
			return writeSums(t, dir, soNames(t, dir)...)
		}, wantIs: ErrNotGoPlugin},
		{name: "second file not listed", prepare: func(t *testing.T, dir string) string {
			sum := writeSums(t, dir, "a.so")
			copyFile(t, artifact(t, "badid.so"), filepath.Join(dir, "zz.so"))
			return sum
		}, wantIs: ErrUnexpectedPlugin},
		{name: "second file incompatible", prepare: func(t *testing.T, dir string) string {
			copyFile(t, artifact(t, "trimpath.so"), filepath.Join(dir, "zz.so"))
			return ""
		}, wantIs: ErrIncompatible},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := pluginDir(t, map[string]string{"a.so": "ordering.so"})
			digest := fileDigest(t, filepath.Join(dir, "a.so"))
			sum := tt.prepare(t, dir)
			hookRan := false
			beforeOpen = func() { hookRan = true }
			t.Cleanup(func() { beforeOpen = nil })
			_, err := Load(Options{Dir: dir, ChecksumFile: sum, Logger: discard()})
			checkErr(t, err, []error{tt.wantIs}, []string{`"zz.so"`})
			if hookRan {
				t.Error("Load got to the open phase")
			}
			proc.mu.Lock()
			_, opened := proc.opened[digest]
			proc.mu.Unlock()
			if opened {
				t.Error("a.so was opened although zz.so failed verification")
			}
		})
	}
}

// TestLoadOpensVerifiedBytes swaps the plugin file after verification: the
// bytes that were verified are still the ones loaded.
func TestLoadOpensVerifiedBytes(t *testing.T) {
	opts := withChecksums(t, map[string]string{"plugin.so": "swaporig.so"})
	path := filepath.Join(opts.Dir, "plugin.so")
	orig := fileDigest(t, path)
	opts.TempDir = t.TempDir()
	beforeOpen = func() {
		tmp := path + ".new"
		copyFile(t, artifact(t, "tcpgood.so"), tmp)
		if err := os.Rename(tmp, path); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { beforeOpen = nil })
	got, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if fileDigest(t, path) == orig {
		t.Fatal("the hook did not replace the file")
	}
	if len(got) != 1 || got[0].ID != "swap-original" || got[0].Digest != orig {
		t.Errorf("loaded %+v, want id swap-original with digest %s", got, orig)
	}
	if ents, _ := os.ReadDir(opts.TempDir); len(ents) != 0 {
		t.Errorf("private copies left behind: %v", ents)
	}
}

// TestLoadTempDir: an unusable temporary directory is reported before
// anything is opened.
func TestLoadTempDir(t *testing.T) {
	opts := withChecksums(t, map[string]string{"ordering.so": "ordering.so"})
	opts.TempDir = filepath.Join(t.TempDir(), "missing")
	_, err := Load(opts)
	checkErr(t, err, []error{ErrOpen}, []string{`plugin "ordering.so": cannot create a private directory for its copy`})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error does not wrap the cause: %v", err)
	}
}

// TestLoadWithoutCgo: a broker built without cgo refuses plugins with one
// clear message. In a cgo build the variable is switched off for the test
// (Load consults it before touching any file), so the check always runs.
func TestLoadWithoutCgo(t *testing.T) {
	if CgoEnabled {
		CgoEnabled = false
		t.Cleanup(func() { CgoEnabled = true })
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "x.so"), "anything")
	_, err := Load(Options{Dir: dir, Logger: discard()})
	checkErr(t, err, []error{ErrNoPluginSupport}, []string{"this broker was built without cgo and cannot load plugins", `"x.so"`})
	if got, err := Load(Options{Dir: t.TempDir(), Logger: discard()}); err != nil || got != nil {
		t.Errorf("empty directory: %v, %v", got, err)
	}
}

// TestLoadNoexecHint simulates what dlopen says when the private copy sits
// on a noexec mount: the error says so, and since nothing was mapped the
// failure is not remembered.
func TestLoadNoexecHint(t *testing.T) {
	opts := withChecksums(t, map[string]string{"ordering.so": "ordering.so"})
	opts.TempDir = t.TempDir()
	var opened string
	openPlugin = func(path string) (library, error) {
		opened = path
		return nil, errors.New(`plugin.Open("` + strings.TrimSuffix(path, ".so") + `"): ` + path + `: failed to map segment from shared object`)
	}
	t.Cleanup(func() { openPlugin = openLibrary })
	_, err := Load(opts)
	checkErr(t, err, []error{ErrOpen}, []string{`plugin "ordering.so" (sha256 `, "failed to map segment", `the temporary directory "` + opts.TempDir + `" is probably on a noexec mount`})
	if filepath.Dir(filepath.Dir(opened)) != opts.TempDir || filepath.Base(opened) != "ordering.so" {
		t.Errorf("opened %q, want a copy named ordering.so in a private directory under %q", opened, opts.TempDir)
	}
	proc.mu.Lock()
	_, remembered := proc.opened[fileDigest(t, filepath.Join(opts.Dir, "ordering.so"))]
	proc.mu.Unlock()
	if remembered {
		t.Error("a failure that mapped nothing was remembered")
	}
}

// TestLoadPrivateCopy checks the private copy that is handed to Open.
func TestLoadPrivateCopy(t *testing.T) {
	opts := withChecksums(t, map[string]string{"ordering.so": "ordering.so"})
	want, err := os.ReadFile(filepath.Join(opts.Dir, "ordering.so"))
	if err != nil {
		t.Fatal(err)
	}
	opts.TempDir = t.TempDir()
	openPlugin = func(path string) (library, error) {
		dirInfo, err := os.Stat(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		if m := dirInfo.Mode().Perm(); m != 0o700 {
			t.Errorf("private directory mode %v, want 0700", m)
		}
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if m := info.Mode().Perm(); m != 0o500 {
			t.Errorf("copy mode %v, want 0500", m)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if hexSum(got) != hexSum(want) {
			t.Error("the copy differs from the verified file")
		}
		// Not a real open: fail the way a noexec mount does, which is
		// not remembered, so ordering.so stays unopened for other tests.
		return nil, errors.New("failed to map segment from shared object")
	}
	t.Cleanup(func() { openPlugin = openLibrary })
	_, err = Load(opts)
	checkErr(t, err, []error{ErrOpen}, nil)
	if ents, _ := os.ReadDir(opts.TempDir); len(ents) != 0 {
		t.Errorf("private directory left behind: %v", ents)
	}
}

// TestWritableWarnings: a checksum file, its directory or a plugin
// directory that users other than the owner can write is warned about
// (verification itself still holds), with the chmod that fixes it.
func TestWritableWarnings(t *testing.T) {
	tests := []struct {
		name    string
		sumMode os.FileMode
		sumDir  os.FileMode
		dirMode os.FileMode
		want    []string // substrings of the one warning expected
	}{
		{"owner only", 0o644, 0o755, 0o755, nil},
		{"checksum file world-writable", 0o666, 0o755, 0o755,
			[]string{"the checksum file can be written by other users (mode 0666)", "chmod go-w"}},
		{"checksum file group-writable", 0o664, 0o755, 0o755,
			[]string{"the checksum file can be written by its group (mode 0664)", "chmod g-w"}},
		{"checksum file's directory world-writable", 0o644, 0o777, 0o755,
			[]string{"the checksum file's directory can be written by other users", "chmod o-w"}},
		{"plugin directory world-writable", 0o644, 0o755, 0o777,
			[]string{"the plugin directory can be written by other users (mode 0777): anyone can add files"}},
		{"checksum file's directory sticky, as /tmp", 0o644, os.ModeSticky | 0o777, 0o755, nil},
		{"plugin directory sticky and world-writable", 0o644, 0o755, os.ModeSticky | 0o777,
			[]string{"the plugin directory can be written by other users (mode 01777)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := withChecksums(t, map[string]string{"tcpgood.so": "tcpgood.so"})
			rec := &recorder{}
			opts.Logger = slog.New(rec)
			for path, mode := range map[string]os.FileMode{opts.ChecksumFile: tc.sumMode, filepath.Dir(opts.ChecksumFile): tc.sumDir, opts.Dir: tc.dirMode} {
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := Verify(opts); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			wantN := 0
			if tc.want != nil {
				wantN = 1 // each case loosens one thing
			}
			if got := rec.find(slog.LevelWarn, "can be written by"); len(got) != wantN {
				t.Fatalf("%d warnings, want %d: %v", len(got), wantN, rec.records)
			}
			var all string
			for _, r := range rec.records {
				all += r.Message + "\n"
			}
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("warnings %q lack %q", all, w)
				}
			}
		})
	}
}
