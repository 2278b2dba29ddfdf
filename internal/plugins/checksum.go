package plugins

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// Entry is one line of a checksum file.
type Entry struct {
	// Line is the 1-based line number in the checksum file.
	Line int
	// Name is the file name as written (after GNU unescaping), for example
	// "a.so", "./a.so" or "/usr/local/lib/secretless/a.so".
	Name string
	// Base is the part of Name after the last slash. Entries are matched to
	// plugin files by Base.
	Base string
	// Digest is the sha256 digest in lowercase hex (64 characters).
	Digest string
	// Binary reports the binary-mode marker ("hash *name").
	Binary bool
	// Tag reports the BSD form ("SHA256 (name) = hash", sha256sum --tag).
	Tag bool
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// ParseChecksums parses the contents of a checksum file in any form GNU
// sha256sum writes or "sha256sum -c" reads:
//
//	<hash>  <name>            text mode (two spaces)
//	<hash> *<name>            binary mode (-b)
//	<hash> <name>             one space, or a TAB, instead of two spaces
//	\<hash>  <escaped name>   a name with \, LF or CR: the line starts with \
//	                          and the name is written with \\, \n and \r
//	SHA256 (<name>) = <hash>  BSD form (--tag), also with a leading \
//
// Lines may end in CRLF, the data may start with a UTF-8 byte-order mark,
// and blank lines and lines starting with # are ignored. The hash must be 64
// hex digits of either case. Any other line is an error (wrapping
// ErrMalformedChecksum) that names its line number. Duplicate entries are
// returned as they are; Verify decides about them.
func ParseChecksums(data []byte) ([]Entry, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	var entries []Entry
	for i, raw := range strings.Split(string(data), "\n") {
		lineNo := i + 1
		line := strings.TrimSuffix(raw, "\r")
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		e, err := parseLine(trimmed)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w: %s", lineNo, ErrMalformedChecksum, err.Error())
		}
		e.Line = lineNo
		entries = append(entries, e)
	}
	return entries, nil
}

type parseError string

func (e parseError) Error() string { return string(e) }

func parseLine(s string) (Entry, error) {
	var e Entry
	escaped := false
	if strings.HasPrefix(s, `\`) {
		escaped = true
		s = s[1:]
	}
	var name, hash string
	if rest, ok := strings.CutPrefix(s, "SHA256"); ok && (strings.HasPrefix(rest, " (") || strings.HasPrefix(rest, "(")) {
		rest = strings.TrimPrefix(rest, " ")
		rest = rest[1:] // "("
		i := strings.LastIndex(rest, ") = ")
		if i < 0 {
			return e, parseError(`BSD-style line without ") = " before the hash`)
		}
		name, hash = rest[:i], rest[i+len(") = "):]
		if err := checkHash(hash); err != nil {
			return e, err
		}
		e.Tag = true
	} else {
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			if checkHash(s) == nil {
				return e, parseError("hash without a file name")
			}
			return e, parseError(`want "<sha256 hex>  <file name>" or "SHA256 (<file name>) = <sha256 hex>"`)
		}
		hash = s[:i]
		if err := checkHash(hash); err != nil {
			if alg, _, found := strings.Cut(s, " ("); found && isAlgName(alg) {
				return e, parseError(fmt.Sprintf("unsupported algorithm %q, want SHA256", alg))
			}
			return e, err
		}
		rest := s[i+1:]
		if strings.HasPrefix(rest, "*") {
			e.Binary = true
			rest = rest[1:]
		} else if strings.HasPrefix(rest, " ") {
			rest = rest[1:]
		}
		name = rest
	}
	if escaped {
		var err error
		if name, err = unescapeName(name); err != nil {
			return e, err
		}
	}
	if name == "" {
		return e, parseError("empty file name")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return e, parseError("file name contains a NUL byte")
	}
	base := name[strings.LastIndexByte(name, '/')+1:]
	if base == "" || base == "." || base == ".." {
		return e, parseError(fmt.Sprintf("%q does not name a file", name))
	}
	e.Name, e.Base, e.Digest = name, base, strings.ToLower(hash)
	return e, nil
}

func isAlgName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' && r != '/' {
			return false
		}
	}
	return true
}

func checkHash(h string) error {
	if len(h) != sha256.Size*2 {
		return parseError(fmt.Sprintf("hash has %d characters, want 64 hex digits (sha256)", len(h)))
	}
	if _, err := hex.DecodeString(h); err != nil {
		return parseError("hash is not hexadecimal")
	}
	return nil
}

func unescapeName(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return "", parseError(`file name ends with a lone \`)
		}
		i++
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		default:
			return "", parseError(fmt.Sprintf(`unknown escape \%c in file name`, s[i]))
		}
	}
	return b.String(), nil
}

// formatLine writes one sha256sum text-mode line, escaping like GNU.
func formatLine(digest, name string) string {
	if !strings.ContainsAny(name, "\\\n\r") {
		return digest + "  " + name + "\n"
	}
	r := strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`)
	return `\` + digest + "  " + r.Replace(name) + "\n"
}

// Sum returns a checksum file for the plugins in dir, in the format of
// "sha256sum dir/*": one "<hex>  <dir>/<name>" line per plugin, names with
// \, LF or CR escaped as GNU does, sorted by name.
//
// Only regular files named *.so are listed: those are the only entries the
// broker treats as plugin candidates. Unlike the shell glob, names starting
// with a dot are included, because Verify counts every entry. Anything else
// in the directory (subdirectories, symlinks, other files) is left out;
// Verify with a checksum file refuses such entries, so remove them.
func Sum(dir string) (string, error) {
	list, err := listDir(dir)
	if err != nil {
		return "", err
	}
	prefix := dir
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	var b strings.Builder
	for _, ent := range list {
		if ent.reason != "" {
			continue
		}
		data, err := readPluginFile(ent.path)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(data)
		b.WriteString(formatLine(hex.EncodeToString(sum[:]), prefix+ent.name))
	}
	return b.String(), nil
}

// maxChecksumFile bounds the checksum file (about 10,000 lines).
const maxChecksumFile = 1 << 20

// readChecksumFile reads and parses the checksum file at path: a regular
// file of at most maxChecksumFile bytes.
func readChecksumFile(path string) ([]Entry, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|openNonBlock, 0)
	if err != nil {
		return nil, errorf(ErrChecksumFile, "checksum file %q: %w", path, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, errorf(ErrChecksumFile, "checksum file %q: %w", path, err)
	} else if !st.Mode().IsRegular() {
		return nil, errorf(ErrChecksumFile, "checksum file %q: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxChecksumFile+1))
	if err != nil {
		return nil, errorf(ErrChecksumFile, "checksum file %q: %w", path, err)
	}
	if len(data) > maxChecksumFile {
		return nil, errorf(ErrChecksumFile, "checksum file %q: larger than %d bytes", path, maxChecksumFile)
	}
	entries, err := ParseChecksums(data)
	if err != nil {
		return nil, fmt.Errorf("checksum file %q: %w", path, err)
	}
	return entries, nil
}
