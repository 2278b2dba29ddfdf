package plugins

import (
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// checkErr fails unless err wraps every sentinel in is and its text
// contains every string in msgs; it also fails if err wraps a sentinel in
// not.
func checkErr(t *testing.T, err error, is []error, msgs []string, not ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", is)
	}
	t.Logf("error: %v", err)
	for _, s := range is {
		if !errors.Is(err, s) {
			t.Errorf("error does not wrap %q:\n%v", s, err)
		}
	}
	for _, s := range not {
		if errors.Is(err, s) {
			t.Errorf("error should not wrap %q:\n%v", s, err)
		}
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error does not contain %q:\n%v", m, err)
		}
	}
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return hexSum(data)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestVerify(t *testing.T) {
	const tcpPkg = "github.com/secretless-broker/secretless-broker/internal/plugins/testdata/plugins/tcpgood"
	three := map[string]string{"tcpgood.so": "tcpgood.so", "httpgood.so": "httpgood.so", "badid.so": "badid.so"}
	// sums writes a checksum file made by the real sha256sum with args
	// followed by the .so files of dir (bare names, or full paths).
	sums := func(full bool, args ...string) func(t *testing.T, dir string) string {
		return func(t *testing.T, dir string) string {
			for _, n := range soNames(t, dir) {
				if full {
					n = filepath.Join(dir, n)
				}
				args = append(args, n)
			}
			return writeSums(t, dir, args...)
		}
	}
	tests := []struct {
		name  string
		files map[string]string // plugin directory: name -> artifact
		// prepare may change the directory and returns the checksum
		// file ("" for none).
		prepare   func(t *testing.T, dir string) string
		wantFiles []string // on success
		wantIs    []error
		wantMsg   []string
		notIs     []error
	}{
		{name: "sha256sum bare names", files: three, prepare: sums(false), wantFiles: []string{"badid.so", "httpgood.so", "tcpgood.so"}},
		{name: "sha256sum full paths", files: three, prepare: sums(true), wantFiles: []string{"badid.so", "httpgood.so", "tcpgood.so"}},
		{name: "sha256sum -b bare names", files: three, prepare: sums(false, "-b"), wantFiles: []string{"badid.so", "httpgood.so", "tcpgood.so"}},
		{name: "sha256sum -b full paths", files: three, prepare: sums(true, "-b"), wantFiles: []string{"badid.so", "httpgood.so", "tcpgood.so"}},
		{name: "sha256sum --tag bare names", files: three, prepare: sums(false, "--tag"), wantFiles: []string{"badid.so", "httpgood.so", "tcpgood.so"}},
		{name: "sha256sum --tag full paths", files: three, prepare: sums(true, "--tag"), wantFiles: []string{"badid.so", "httpgood.so", "tcpgood.so"}},
		{
			name: "escaped names",
			files: map[string]string{
				"with space.so": "tcpgood.so", `back\slash.so`: "httpgood.so", "new\nline.so": "badid.so", "carriage\rreturn.so": "badtype.so",
			},
			prepare:   sums(false),
			wantFiles: []string{`back\slash.so`, "carriage\rreturn.so", "new\nline.so", "with space.so"},
		},
		{
			name:  "crlf bom comments upper case",
			files: three,
			prepare: func(t *testing.T, dir string) string {
				out := sha256sum(t, dir, soNames(t, dir)...)
				var b strings.Builder
				b.WriteString("\uFEFF# plugins for the broker\r\n\r\n")
				for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					h, name, _ := strings.Cut(l, "  ")
					b.WriteString(strings.ToUpper(h) + " ./" + name + "\r\n")
				}
				p := filepath.Join(t.TempDir(), "sums")
				writeFile(t, p, b.String())
				return p
			},
			wantFiles: []string{"badid.so", "httpgood.so", "tcpgood.so"},
		},
		{
			name:  "identical duplicate entries",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				p := filepath.Join(t.TempDir(), "sums")
				writeFile(t, p, string(sha256sum(t, dir, "tcpgood.so"))+string(sha256sum(t, dir, filepath.Join(dir, "tcpgood.so"))))
				return p
			},
			wantFiles: []string{"tcpgood.so"},
		},
		{
			name:  "modified byte",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				sum := writeSums(t, dir, "tcpgood.so")
				p := filepath.Join(dir, "tcpgood.so")
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				data[len(data)/2] ^= 1
				if err := os.WriteFile(p, data, 0o644); err != nil {
					t.Fatal(err)
				}
				return sum
			},
			wantIs:  []error{ErrModifiedPlugin},
			wantMsg: []string{`modified plugin "tcpgood.so": sha256 is `, "line 1 expects "},
			notIs:   []error{ErrNotGoPlugin},
		},
		{
			name:    "extra file",
			files:   map[string]string{"tcpgood.so": "tcpgood.so", "httpgood.so": "httpgood.so"},
			prepare: func(t *testing.T, dir string) string { return writeSums(t, dir, "tcpgood.so") },
			wantIs:  []error{ErrUnexpectedPlugin},
			wantMsg: []string{`unexpected plugin "httpgood.so" (sha256 `, "not listed in checksum file"},
			notIs:   []error{ErrMissingPlugin},
		},
		{
			name:  "missing file",
			files: map[string]string{"tcpgood.so": "tcpgood.so", "httpgood.so": "httpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				sum := writeSums(t, dir, "tcpgood.so", "httpgood.so")
				if err := os.Remove(filepath.Join(dir, "httpgood.so")); err != nil {
					t.Fatal(err)
				}
				return sum
			},
			wantIs:  []error{ErrMissingPlugin},
			wantMsg: []string{`missing plugin "httpgood.so": listed in checksum file`, "line 2 (sha256 ", "but not in plugin directory"},
			notIs:   []error{ErrUnexpectedPlugin},
		},
		{
			name:  "extra and missing are both reported",
			files: map[string]string{"tcpgood.so": "tcpgood.so", "httpgood.so": "httpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				p := filepath.Join(t.TempDir(), "sums")
				writeFile(t, p, strings.Replace(string(sha256sum(t, dir, "tcpgood.so")), "tcpgood.so", "gone.so", 1))
				return p
			},
			wantIs:  []error{ErrMissingPlugin, ErrUnexpectedPlugin},
			wantMsg: []string{`missing plugin "gone.so"`, `unexpected plugin "httpgood.so"`, `unexpected plugin "tcpgood.so"`},
		},
		{
			name:  "conflicting entries",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				p := filepath.Join(t.TempDir(), "sums")
				writeFile(t, p, string(sha256sum(t, dir, "tcpgood.so"))+strings.Repeat("0", 64)+"  /elsewhere/tcpgood.so\n")
				return p
			},
			wantIs:  []error{ErrChecksumConflict},
			wantMsg: []string{`lists "tcpgood.so" twice with different digests`, "line 2 has " + strings.Repeat("0", 64)},
		},
		{
			name:    "same plugin under two names",
			files:   map[string]string{"a.so": "tcpgood.so", "b.so": "tcpgood.so"},
			prepare: sums(false),
			wantIs:  []error{ErrDuplicate},
			wantMsg: []string{`"a.so" and "b.so" have identical contents (sha256 `},
		},
		{
			name:    "non-Go shared library",
			files:   map[string]string{"x.so": "native.so"},
			prepare: sums(false),
			wantIs:  []error{ErrNotGoPlugin},
			wantMsg: []string{`plugin "x.so" (sha256 `, "not a Go plugin: no go:link.pkghashbytes.* dynamic symbols"},
		},
		{
			name:  "not ELF",
			files: map[string]string{},
			prepare: func(t *testing.T, dir string) string {
				writeFile(t, filepath.Join(dir, "junk.so"), "#!/bin/sh\necho not a plugin\n")
				return writeSums(t, dir, "junk.so")
			},
			wantIs:  []error{ErrNotGoPlugin},
			wantMsg: []string{`plugin "junk.so"`, "not a Go plugin: not an ELF file"},
		},
		{
			name:    "go executable",
			files:   map[string]string{"static.so": "static.so"},
			prepare: sums(false),
			wantIs:  []error{ErrNotGoPlugin},
			wantMsg: []string{`plugin "static.so"`, "not an ELF shared object (type ET_EXEC)"},
		},
		{
			name:    "go pie executable",
			files:   map[string]string{"pie.so": "pie.so"},
			prepare: sums(false),
			wantIs:  []error{ErrNotGoPlugin},
			wantMsg: []string{`plugin "pie.so"`, "built with -buildmode=pie, want -buildmode=plugin"},
		},
		{
			name:    "opposite -trimpath",
			files:   map[string]string{"trimpath.so": "trimpath.so"},
			prepare: sums(false),
			wantIs:  []error{ErrIncompatible},
			wantMsg: []string{
				`plugin "trimpath.so" (sha256 `, "is incompatible with this broker", "shared package(s) differ: internal/",
				" more; plugin: go", "-trimpath=true", "broker: go", "-trimpath=false", rebuildHint,
			},
		},
		{
			name:    "sdk from another checkout",
			files:   map[string]string{"sdkcopy.so": "sdkcopy.so"},
			prepare: sums(false),
			wantIs:  []error{ErrIncompatible},
			wantMsg: []string{
				`plugin "sdkcopy.so"`, "4 shared package(s) differ: github.com/secretless-broker/secretless-broker/sdk, " +
					"github.com/secretless-broker/secretless-broker/sdk/connector, github.com/secretless-broker/secretless-broker/sdk/connector/tcp, " +
					"github.com/secretless-broker/secretless-broker/sdk/log;",
			},
		},
		{
			name:    "plugins disagree about a package",
			files:   map[string]string{"pa.so": "pa.so", "pb.so": "pb.so"},
			prepare: sums(false),
			wantIs:  []error{ErrIncompatible},
			wantMsg: []string{`plugin "pb.so" (sha256 `, `is incompatible with plugin "pa.so" (loaded before it): 1 shared package(s) differ: example.com/m/helper;`},
		},
		{
			name:    "two builds of one package",
			files:   map[string]string{"a.so": "tcpgood.so", "b.so": "tcpgood-variant.so"},
			prepare: sums(false),
			wantIs:  []error{ErrDuplicate},
			wantMsg: []string{`"a.so" and "b.so" are both builds of package ` + tcpPkg + "; only one can be loaded"},
			notIs:   []error{ErrIncompatible},
		},
		{
			name:  "other architecture",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "tcpgood.so")
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				// e_machine (offset 18, little endian) := EM_AARCH64.
				data[18], data[19] = byte(elf.EM_AARCH64), byte(elf.EM_AARCH64>>8)
				if err := os.WriteFile(p, data, 0o644); err != nil {
					t.Fatal(err)
				}
				return ""
			},
			wantIs:  []error{ErrIncompatible},
			wantMsg: []string{`plugin "tcpgood.so" (sha256 `, "is built for EM_AARCH64/ELFCLASS64/ELFDATA2LSB, the broker for EM_X86_64/"},
		},
		{
			name:  "directory",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				sum := writeSums(t, dir, "tcpgood.so")
				if err := os.Mkdir(filepath.Join(dir, "extra.so"), 0o755); err != nil {
					t.Fatal(err)
				}
				return sum
			},
			wantIs:  []error{ErrUnexpectedEntry},
			wantMsg: []string{`": unexpected entry "extra.so": is a directory; only regular *.so plugin files are allowed`},
		},
		{
			name:  "symlink listed in the checksum file",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				if err := os.Symlink("tcpgood.so", filepath.Join(dir, "link.so")); err != nil {
					t.Fatal(err)
				}
				return writeSums(t, dir, "tcpgood.so", "link.so") // sha256sum follows the link
			},
			wantIs:  []error{ErrUnexpectedEntry},
			wantMsg: []string{`": unexpected entry "link.so": is a symbolic link`},
			notIs:   []error{ErrMissingPlugin, ErrDuplicate},
		},
		{
			name:  "readme",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				writeFile(t, filepath.Join(dir, "README"), "plugins go here\n")
				return writeSums(t, dir, "tcpgood.so", "README")
			},
			wantIs:  []error{ErrUnexpectedEntry},
			wantMsg: []string{`": unexpected entry "README": is not a .so file`},
		},
		{
			name:  "checksum file inside the plugin directory",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "PLUGINS_SHA256SUM.txt")
				if err := os.WriteFile(path, sha256sum(t, dir, "tcpgood.so"), 0o644); err != nil {
					t.Fatal(err)
				}
				return path
			},
			wantIs:  []error{ErrUnexpectedEntry},
			wantMsg: []string{`unexpected entry "PLUGINS_SHA256SUM.txt": is not a .so file; it is the checksum file itself: keep the checksum file outside the plugin directory`},
		},
		{
			name:  "checksum file inside the plugin directory, named another way",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				if err := os.WriteFile(filepath.Join(dir, "SUMS.txt"), sha256sum(t, dir, "tcpgood.so"), 0o644); err != nil {
					t.Fatal(err)
				}
				link := filepath.Join(t.TempDir(), "plugins")
				if err := os.Symlink(dir, link); err != nil {
					t.Fatal(err)
				}
				return filepath.Join(link, "SUMS.txt")
			},
			wantIs:  []error{ErrUnexpectedEntry},
			wantMsg: []string{`unexpected entry "SUMS.txt": is not a .so file; it is the checksum file itself`},
		},
		{
			name:  "fifo",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				if err := syscall.Mkfifo(filepath.Join(dir, "fifo.so"), 0o644); err != nil {
					t.Fatal(err)
				}
				return writeSums(t, dir, "tcpgood.so")
			},
			wantIs:  []error{ErrUnexpectedEntry},
			wantMsg: []string{`": unexpected entry "fifo.so": is a named pipe`},
		},
		{
			name:  "checksum file but no directory",
			files: map[string]string{},
			prepare: func(t *testing.T, dir string) string {
				sum := filepath.Join(t.TempDir(), "sums")
				writeFile(t, sum, "")
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
				return sum
			},
			wantIs:  []error{ErrNoPluginDir},
			wantMsg: []string{"does not exist but checksum file"},
		},
		{
			name:  "plugin directory is a file",
			files: map[string]string{},
			prepare: func(t *testing.T, dir string) string {
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
				writeFile(t, dir, "")
				return ""
			},
			wantIs:  []error{ErrNoPluginDir},
			wantMsg: []string{"is not a directory"},
		},
		{
			name:  "no checksum file and no directory",
			files: map[string]string{},
			prepare: func(t *testing.T, dir string) string {
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
				return ""
			},
		},
		{
			name:    "checksum file does not exist",
			files:   map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string { return filepath.Join(t.TempDir(), "nope") },
			wantIs:  []error{ErrChecksumFile},
			wantMsg: []string{`checksum file "`, "nope: no such file or directory"},
		},
		{
			name:  "malformed checksum file",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				p := filepath.Join(t.TempDir(), "sums")
				writeFile(t, p, string(sha256sum(t, dir, "tcpgood.so"))+"tcpgood.so\n")
				return p
			},
			wantIs:  []error{ErrMalformedChecksum},
			wantMsg: []string{`checksum file "`, "line 2: malformed checksum line"},
		},
		{
			name:  "empty directory and empty checksum file",
			files: map[string]string{},
			prepare: func(t *testing.T, dir string) string {
				p := filepath.Join(t.TempDir(), "sums")
				writeFile(t, p, "# nothing\n")
				return p
			},
		},
		{
			name:  "no checksum file ignores other entries",
			files: map[string]string{"tcpgood.so": "tcpgood.so"},
			prepare: func(t *testing.T, dir string) string {
				writeFile(t, filepath.Join(dir, "README"), "x")
				if err := os.Symlink("tcpgood.so", filepath.Join(dir, "link.so")); err != nil {
					t.Fatal(err)
				}
				return ""
			},
			wantFiles: []string{"tcpgood.so"},
		},
		{
			name:  "no checksum file still refuses a non-Go library",
			files: map[string]string{"tcpgood.so": "tcpgood.so", "x.so": "native.so"},
			prepare: func(t *testing.T, dir string) string {
				return ""
			},
			wantIs: []error{ErrNotGoPlugin},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := pluginDir(t, tt.files)
			sum := tt.prepare(t, dir)
			got, err := Verify(Options{Dir: dir, ChecksumFile: sum, Logger: discard()})
			if tt.wantIs == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				var files []string
				for _, p := range got {
					files = append(files, p.File)
					if p.Digest != fileDigest(t, p.Path) {
						t.Errorf("%s: digest %s, file has %s", p.File, p.Digest, fileDigest(t, p.Path))
					}
					if p.ID != "" || p.TCP != nil || p.HTTP != nil {
						t.Errorf("%s: Verify ran plugin code: %+v", p.File, p)
					}
					if p.PackagePath == "" || p.GoVersion == "" {
						t.Errorf("%s: no package path or Go version: %+v", p.File, p)
					}
				}
				if !slices.Equal(files, tt.wantFiles) {
					t.Errorf("files %q, want %q", files, tt.wantFiles)
				}
				return
			}
			checkErr(t, err, tt.wantIs, tt.wantMsg, tt.notIs...)
		})
	}
}

// TestVerifyBrokerCannotLoad stands in a statically linked executable for
// the running broker.
func TestVerifyBrokerCannotLoad(t *testing.T) {
	static := artifact(t, "static.so")
	f, err := os.Open(static)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := readELF(f, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.pkgs) != 0 {
		t.Fatalf("static executable has %d package fingerprints", len(b.pkgs))
	}
	old := executable
	executable = func() (*goBinary, error) { return b, nil }
	t.Cleanup(func() { executable = old })

	dir := pluginDir(t, map[string]string{"tcpgood.so": "tcpgood.so"})
	_, err = Verify(Options{Dir: dir, Logger: discard()})
	checkErr(t, err, []error{ErrNoPluginSupport}, []string{"this broker executable cannot load plugins"})
	_, err = Load(Options{Dir: dir, Logger: discard()})
	checkErr(t, err, []error{ErrNoPluginSupport}, nil)
}
