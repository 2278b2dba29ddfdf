package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// weirdNames are file names sha256sum writes in every way it can: plain,
// with spaces, and escaped (backslash, LF, CR).
var weirdNames = []string{"a.so", "with space.so", `back\slash.so`, "new\nline.so", "carriage\rreturn.so"}

func hexSum(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// TestParseChecksumsFromSha256sum parses what the real sha256sum binary
// writes, in every mode, with bare names and full paths.
func TestParseChecksumsFromSha256sum(t *testing.T) {
	dir := t.TempDir()
	want := map[string]string{}
	for i, name := range weirdNames {
		data := []byte(strings.Repeat("x", i+1))
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = hexSum(data)
	}
	full := make([]string, len(weirdNames))
	for i, n := range weirdNames {
		full[i] = filepath.Join(dir, n)
	}
	dotted := make([]string, len(weirdNames))
	for i, n := range weirdNames {
		dotted[i] = "./" + n
	}
	tests := []struct {
		name   string
		args   []string
		binary bool
		tag    bool
	}{
		{name: "text bare names", args: weirdNames},
		{name: "text full paths", args: full},
		{name: "text dot slash", args: dotted},
		{name: "binary bare names", args: append([]string{"-b"}, weirdNames...), binary: true},
		{name: "binary full paths", args: append([]string{"-b"}, full...), binary: true},
		{name: "tag bare names", args: append([]string{"--tag"}, weirdNames...), tag: true},
		{name: "tag full paths", args: append([]string{"--tag"}, full...), tag: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := sha256sum(t, dir, tt.args...)
			entries, err := ParseChecksums(out)
			if err != nil {
				t.Fatalf("ParseChecksums: %v\n%s", err, out)
			}
			if len(entries) != len(weirdNames) {
				t.Fatalf("got %d entries, want %d:\n%q", len(entries), len(weirdNames), out)
			}
			for _, e := range entries {
				d, ok := want[e.Base]
				if !ok {
					t.Errorf("line %d: unexpected base name %q (name %q)", e.Line, e.Base, e.Name)
					continue
				}
				if e.Digest != d {
					t.Errorf("%q: digest %s, want %s", e.Base, e.Digest, d)
				}
				if e.Binary != tt.binary || e.Tag != tt.tag {
					t.Errorf("%q: binary=%v tag=%v, want %v %v", e.Base, e.Binary, e.Tag, tt.binary, tt.tag)
				}
				if !strings.HasSuffix(e.Name, e.Base) {
					t.Errorf("name %q does not end in base %q", e.Name, e.Base)
				}
			}
		})
	}
}

func TestParseChecksums(t *testing.T) {
	h1 := strings.Repeat("ab", 32)
	h2 := strings.Repeat("0f", 32)
	tests := []struct {
		name  string
		input string
		want  []Entry // Line, Base, Digest and Name are compared
	}{
		{name: "text", input: h1 + "  a.so\n", want: []Entry{{Line: 1, Name: "a.so", Base: "a.so", Digest: h1}}},
		{name: "binary", input: h1 + " *a.so\n", want: []Entry{{Line: 1, Name: "a.so", Base: "a.so", Digest: h1, Binary: true}}},
		{name: "single space", input: h1 + " a.so\n", want: []Entry{{Line: 1, Name: "a.so", Base: "a.so", Digest: h1}}},
		{name: "tab", input: h1 + "\ta.so\n", want: []Entry{{Line: 1, Name: "a.so", Base: "a.so", Digest: h1}}},
		{name: "no final newline", input: h1 + "  a.so", want: []Entry{{Line: 1, Name: "a.so", Base: "a.so", Digest: h1}}},
		{name: "upper case hex", input: strings.ToUpper(h1) + "  a.so\n", want: []Entry{{Line: 1, Name: "a.so", Base: "a.so", Digest: h1}}},
		{name: "crlf", input: h1 + "  a.so\r\n" + h2 + "  b.so\r\n", want: []Entry{
			{Line: 1, Name: "a.so", Base: "a.so", Digest: h1}, {Line: 2, Name: "b.so", Base: "b.so", Digest: h2}}},
		{name: "bom", input: "\uFEFF" + h1 + "  a.so\n", want: []Entry{{Line: 1, Name: "a.so", Base: "a.so", Digest: h1}}},
		{name: "comments and blank lines", input: "# plugins\n\n   \n" + h1 + "  a.so\n  # indented comment\n\r\n" + h2 + "  b.so\n",
			want: []Entry{{Line: 4, Name: "a.so", Base: "a.so", Digest: h1}, {Line: 7, Name: "b.so", Base: "b.so", Digest: h2}}},
		{name: "dot slash", input: h1 + "  ./a.so\n", want: []Entry{{Line: 1, Name: "./a.so", Base: "a.so", Digest: h1}}},
		{name: "full path", input: h1 + "  /usr/local/lib/secretless/a.so\n", want: []Entry{{Line: 1, Name: "/usr/local/lib/secretless/a.so", Base: "a.so", Digest: h1}}},
		{name: "space in name", input: h1 + "  with space.so\n", want: []Entry{{Line: 1, Name: "with space.so", Base: "with space.so", Digest: h1}}},
		{name: "unescaped backslash is literal", input: h1 + "  a\\nb.so\n", want: []Entry{{Line: 1, Name: `a\nb.so`, Base: `a\nb.so`, Digest: h1}}},
		{name: "escaped", input: `\` + h1 + `  d/back\\slash\nnew\rcr.so` + "\n", want: []Entry{{Line: 1, Name: "d/back\\slash\nnew\rcr.so", Base: "back\\slash\nnew\rcr.so", Digest: h1}}},
		{name: "tag", input: "SHA256 (d/a.so) = " + h1 + "\n", want: []Entry{{Line: 1, Name: "d/a.so", Base: "a.so", Digest: h1, Tag: true}}},
		{name: "tag with parens in name", input: "SHA256 (a (1).so) = " + h1 + "\n", want: []Entry{{Line: 1, Name: "a (1).so", Base: "a (1).so", Digest: h1, Tag: true}}},
		{name: "tag escaped", input: `\SHA256 (new\nline.so) = ` + h1 + "\n", want: []Entry{{Line: 1, Name: "new\nline.so", Base: "new\nline.so", Digest: h1, Tag: true}}},
		{name: "mixed forms", input: h1 + "  a.so\n" + h2 + " *b.so\nSHA256 (c.so) = " + h1 + "\n", want: []Entry{
			{Line: 1, Name: "a.so", Base: "a.so", Digest: h1}, {Line: 2, Name: "b.so", Base: "b.so", Digest: h2, Binary: true},
			{Line: 3, Name: "c.so", Base: "c.so", Digest: h1, Tag: true}}},
		{name: "duplicates are returned", input: h1 + "  a.so\n" + h1 + "  ./a.so\n", want: []Entry{
			{Line: 1, Name: "a.so", Base: "a.so", Digest: h1}, {Line: 2, Name: "./a.so", Base: "a.so", Digest: h1}}},
		{name: "empty", input: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseChecksums([]byte(tt.input))
			if err != nil {
				t.Fatalf("ParseChecksums: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseChecksumsErrors(t *testing.T) {
	h := strings.Repeat("ab", 32)
	tests := []struct {
		name, input, want string
	}{
		{name: "garbage", input: h + "  a.so\nnot a checksum line\n", want: "line 2: "},
		{name: "short hash", input: "# c\n" + h[:63] + "  a.so\n", want: "line 2: malformed checksum line: hash has 63 characters"},
		{name: "long hash", input: h + h + "  a.so\n", want: "line 1: malformed checksum line: hash has 128 characters"},
		{name: "not hex", input: strings.Repeat("zz", 32) + "  a.so\n", want: "line 1: malformed checksum line: hash is not hexadecimal"},
		{name: "no name", input: h + "\n", want: "line 1: malformed checksum line: hash without a file name"},
		{name: "empty name", input: h + "  \n", want: "line 1: malformed checksum line: empty file name"},
		{name: "directory name", input: h + "  plugins/\n", want: `line 1: malformed checksum line: "plugins/" does not name a file`},
		{name: "dot dot", input: h + "  ../..\n", want: `does not name a file`},
		{name: "bad escape", input: `\` + h + `  a\t.so` + "\n", want: `line 1: malformed checksum line: unknown escape \t`},
		{name: "lone backslash", input: `\` + h + `  a.so\` + "\n", want: `lone \`},
		{name: "other algorithm", input: "MD5 (a.so) = 0123456789abcdef0123456789abcdef\n", want: `line 1: malformed checksum line: unsupported algorithm "MD5"`},
		{name: "tag bad hash", input: "SHA256 (a.so) = 1234\n", want: "line 1: malformed checksum line: hash has 4 characters"},
		{name: "tag without equals", input: "SHA256 (a.so) " + h + "\n", want: `line 1: malformed checksum line: BSD-style line without ") = "`},
		{name: "line number after crlf and bom", input: "\uFEFF" + h + "  a.so\r\n\r\nbad\r\n", want: "line 3: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseChecksums([]byte(tt.input))
			if err == nil {
				t.Fatalf("no error, entries %+v", got)
			}
			if !errors.Is(err, ErrMalformedChecksum) {
				t.Errorf("error %v does not wrap ErrMalformedChecksum", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// TestSum compares Sum with the real "sha256sum dir/*.so" and checks that
// only regular .so files are listed and that the output parses back.
func TestSum(t *testing.T) {
	for _, form := range []string{"relative", "absolute", "trailing slash"} {
		t.Run(form, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "plugins")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for i, name := range weirdNames {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Repeat("y", i+3)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// Not candidates: a README, a directory, symlinks.
			if err := os.WriteFile(filepath.Join(dir, "README"), []byte("hi"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(dir, "sub.so"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("a.so", filepath.Join(dir, "link.so")); err != nil {
				t.Fatal(err)
			}
			arg := map[string]string{"relative": "plugins", "absolute": dir, "trailing slash": "plugins/"}[form]
			var args []string
			names := slices.Clone(weirdNames)
			sort.Strings(names)
			for _, n := range names {
				p := arg + "/" + n
				if strings.HasSuffix(arg, "/") {
					p = arg + n
				}
				args = append(args, p)
			}
			want := string(sha256sum(t, root, args...))

			sumDir := arg
			if !filepath.IsAbs(arg) {
				t.Chdir(root)
			}
			got, err := Sum(sumDir)
			if err != nil {
				t.Fatalf("Sum: %v", err)
			}
			if got != want {
				t.Errorf("Sum(%q) =\n%q\nsha256sum says\n%q", sumDir, got, want)
			}
			entries, err := ParseChecksums([]byte(got))
			if err != nil {
				t.Fatalf("ParseChecksums(Sum): %v", err)
			}
			var bases []string
			for _, e := range entries {
				bases = append(bases, e.Base)
			}
			if !slices.Equal(bases, names) {
				t.Errorf("round trip names %q, want %q", bases, names)
			}
		})
	}
	t.Run("missing dir", func(t *testing.T) {
		if _, err := Sum(filepath.Join(t.TempDir(), "nope")); err == nil {
			t.Error("no error for a missing directory")
		}
	})
}

// TestClassify covers every kind of directory entry.
func TestClassify(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, f func(p string) error) {
		if err := f(filepath.Join(dir, name)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	mk("ok.so", func(p string) error { return os.WriteFile(p, nil, 0o644) })
	mk("README", func(p string) error { return os.WriteFile(p, nil, 0o644) })
	mk(".so", func(p string) error { return os.WriteFile(p, nil, 0o644) })
	mk("dir.so", func(p string) error { return os.Mkdir(p, 0o755) })
	mk("link.so", func(p string) error { return os.Symlink("ok.so", p) })
	mk("fifo.so", func(p string) error { return syscall.Mkfifo(p, 0o644) })
	mk("sock.so", func(p string) error {
		l, err := net.Listen("unix", p)
		if err == nil {
			t.Cleanup(func() { l.Close() })
		}
		return err
	})
	want := map[string]string{
		"ok.so": "", "README": "is not a .so file", ".so": "is not a .so file", "dir.so": "is a directory",
		"link.so": "is a symbolic link", "fifo.so": "is a named pipe", "sock.so": "is a socket",
	}
	list, err := listDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(want) {
		t.Fatalf("listDir returned %d entries, want %d", len(list), len(want))
	}
	for _, e := range list {
		t.Run(e.name, func(t *testing.T) {
			if e.reason != want[e.name] {
				t.Errorf("reason %q, want %q", e.reason, want[e.name])
			}
		})
	}
	t.Run("device", func(t *testing.T) {
		st, err := os.Lstat("/dev/null")
		if err != nil {
			t.Skip(err)
		}
		if got := classify("null.so", st.Mode()); got != "is a device" {
			t.Errorf("classify(/dev/null) = %q", got)
		}
	})
}

func TestDigestEqual(t *testing.T) {
	a := strings.Repeat("ab", 32)
	tests := []struct {
		name string
		x, y string
		want bool
	}{
		{"same", a, a, true},
		{"case", a, strings.ToUpper(a), true},
		{"last digit", a, a[:63] + "c", false},
		{"short", a, a[:62], false},
		{"not hex", a, strings.Repeat("zz", 32), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := digestEqual(tt.x, tt.y); got != tt.want {
				t.Errorf("digestEqual = %v, want %v", got, tt.want)
			}
		})
	}
}

// FuzzParseChecksums: parsing never panics, and every line Sum would write
// for a valid name parses back to that name.
func FuzzParseChecksums(f *testing.F) {
	f.Add("a.so", []byte(strings.Repeat("ab", 32)+"  a.so\n"))
	f.Add("back\\slash\n.so", []byte("\\"+strings.Repeat("ab", 32)+"  x\\\\y\n"))
	f.Add(" *lead.so", []byte("SHA256 (a (b)) = "+strings.Repeat("0", 64)))
	f.Add("d/x\r.so", []byte("\uFEFF#c\r\n"))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		_, _ = ParseChecksums(data)

		base := name[strings.LastIndexByte(name, '/')+1:]
		if name == "" || strings.IndexByte(name, 0) >= 0 || base == "" || base == "." || base == ".." {
			return
		}
		digest := strings.Repeat("0a", 32)
		entries, err := ParseChecksums([]byte(formatLine(digest, name)))
		if err != nil {
			t.Fatalf("formatLine(%q) does not parse: %v", name, err)
		}
		if len(entries) != 1 || entries[0].Name != name || entries[0].Base != base || entries[0].Digest != digest {
			t.Fatalf("formatLine(%q) parses as %+v", name, entries)
		}
	})
}
