package plugins

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/secretless-broker/secretless-broker/sdk/connector/http"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// Options says where the plugins are and how to check them.
type Options struct {
	// Dir is the plugin directory. Every entry counts (not recursive).
	Dir string
	// ChecksumFile is a sha256sum-format file that must list exactly the
	// plugins in Dir. "" means no verification: plugins are loaded with a
	// loud warning.
	ChecksumFile string
	// Reserved lists connector ids taken by built-in connectors; a plugin
	// with one of these ids is refused.
	Reserved []string
	// Logger receives one Info line per plugin and the warnings; nil means
	// slog.Default().
	Logger *slog.Logger
	// TempDir is where Load writes the private copy of each verified plugin
	// that it hands to plugin.Open; "" means os.TempDir(). It must not be on
	// a noexec mount.
	TempDir string
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// Plugin is one verified (and, after Load, loaded) plugin.
type Plugin struct {
	// File is the base name, Path the full path in the plugin directory and
	// Digest the lowercase hex sha256 of the file.
	File, Path, Digest string
	// ID, Type, Description and APIVersion come from PluginInfo; they are
	// empty after Verify, which runs no plugin code.
	ID, Type, Description, APIVersion string
	// PackagePath is the import path of the plugin's main package and
	// GoVersion the Go release it was built with (from the file itself).
	PackagePath, GoVersion string
	// TCP is set when Type == sdk.TypeTCPConnector.
	TCP tcp.Plugin
	// HTTP is set when Type == sdk.TypeHTTPConnector.
	HTTP http.Plugin
}

// candidate is a plugin file together with the bytes that were verified.
type candidate struct {
	Plugin
	data []byte
	bin  *goBinary
}

// proc is the plugin state of this process. Go plugins are never unloaded,
// so what was opened once constrains every later Load.
var proc = struct {
	mu sync.Mutex
	// pkgs holds the fingerprints of packages provided by plugins opened
	// so far (the first one opened wins, as in the dynamic linker).
	pkgs map[string]origin
	// byPath maps a plugin package path to the digest opened under it.
	byPath map[string]string
	// opened maps a digest to the outcome of opening those bytes.
	opened map[string]*openResult
}{
	pkgs:   map[string]origin{},
	byPath: map[string]string{},
	opened: map[string]*openResult{},
}

// Verify runs every check that does not execute plugin code: the directory
// entries, the checksum file (parse and exact set match), duplicates, the
// ELF and Go-plugin checks, and compatibility with the running executable,
// with plugins loaded earlier in this process and among the plugins
// themselves (in load order, that is by file name).
//
// It returns one result per plugin file that could be read (ID, Type,
// Description and APIVersion stay empty) and a non-nil error on any
// failure; several problems are joined with errors.Join.
func Verify(opts Options) ([]Plugin, error) {
	proc.mu.Lock()
	defer proc.mu.Unlock()
	cands, err := verify(opts)
	out := make([]Plugin, len(cands))
	for i, c := range cands {
		out[i] = c.Plugin
	}
	return out, err
}

// verify is Verify with proc.mu held; it keeps the verified bytes.
func verify(opts Options) ([]*candidate, error) {
	log := opts.logger()
	if opts.Dir == "" {
		if opts.ChecksumFile != "" {
			return nil, errorf(ErrNoPluginDir, "checksum file %q given without a plugin directory", opts.ChecksumFile)
		}
		return nil, nil
	}
	checked := opts.ChecksumFile != ""
	var entries []Entry
	if checked {
		var err error
		if entries, err = readChecksumFile(opts.ChecksumFile); err != nil {
			return nil, err
		}
	}
	exists, err := dirExists(opts.Dir)
	if err != nil {
		return nil, err
	}
	if checked {
		warnWritable(log, opts.ChecksumFile, "checksum file", 0o022)
		warnWritable(log, filepath.Dir(opts.ChecksumFile), "checksum file's directory", 0o002)
	}
	if exists {
		warnWritable(log, opts.Dir, "plugin directory", 0o002)
	}
	if !exists {
		if checked {
			return nil, errorf(ErrNoPluginDir, "plugin directory %q does not exist but checksum file %q was given", opts.Dir, opts.ChecksumFile)
		}
		log.Debug("no plugin directory, no plugins", "dir", opts.Dir)
		return nil, nil
	}
	list, err := listDir(opts.Dir)
	if err != nil {
		return nil, errorf(ErrNoPluginDir, "plugin directory %q: %w", opts.Dir, err)
	}

	var errs []error
	fail := func(err error) { errs = append(errs, err) }
	present := map[string]bool{}
	var cands []*candidate
	failed := map[*candidate]bool{}
	for _, ent := range list {
		present[ent.name] = true
		if ent.reason != "" {
			if checked {
				hint := "only regular *.so plugin files are allowed"
				if opts.ChecksumFile != "" && sameFile(filepath.Join(opts.Dir, ent.name), opts.ChecksumFile) {
					hint = "it is the checksum file itself: keep the checksum file outside the plugin directory (sha256sum DIR/*.so > FILE writes it there when FILE is inside DIR)"
				}
				fail(errorf(ErrUnexpectedEntry, "plugin directory %q: unexpected entry %q: %s; %s", opts.Dir, ent.name, ent.reason, hint))
			} else {
				log.Warn("ignoring entry in plugin directory", "dir", opts.Dir, "entry", ent.name, "reason", ent.reason)
			}
			continue
		}
		data, err := readPluginFile(ent.path)
		if err != nil {
			fail(err)
			continue
		}
		sum := sha256.Sum256(data)
		cands = append(cands, &candidate{
			Plugin: Plugin{File: ent.name, Path: ent.path, Digest: hex.EncodeToString(sum[:])},
			data:   data,
		})
	}

	if checked {
		for _, err := range matchChecksums(opts, entries, cands, present, failed) {
			fail(err)
		}
	}

	// Identical bytes under two names: the second could never be opened.
	byDigest := map[string][]string{}
	for _, c := range cands {
		byDigest[c.Digest] = append(byDigest[c.Digest], c.File)
	}
	for _, c := range cands {
		if names := byDigest[c.Digest]; len(names) > 1 && names[0] == c.File {
			fail(errorf(ErrDuplicate, "duplicate plugin: %s have identical contents (sha256 %s); remove all but one", quoteAll(names), c.Digest))
			for _, d := range cands {
				if d.Digest == c.Digest {
					failed[d] = true
				}
			}
		}
	}

	// ELF and Go-plugin checks.
	for _, c := range cands {
		if failed[c] {
			continue
		}
		b, err := inspectPlugin(c.data)
		if err != nil {
			fail(fmt.Errorf("plugin %q (sha256 %s): %w", c.File, c.Digest, err))
			failed[c] = true
			continue
		}
		c.bin, c.PackagePath, c.GoVersion = b, b.pluginPath, b.goVersion
	}

	if len(cands) > 0 {
		for _, err := range checkCompatibility(cands, failed) {
			fail(err)
		}
	}

	if len(errs) > 0 {
		return cands, errors.Join(errs...)
	}
	if !checked && len(cands) > 0 {
		log.Warn("PLUGIN CHECKSUMS ARE NOT VERIFIED: no checksum file given, so tampering with plugin files cannot be detected; pass a checksum file (sha256sum format) to verify them",
			"dir", opts.Dir, "plugins", len(cands))
	}
	for _, c := range cands {
		if !checked {
			log.Info("plugin checked, not verified (no checksum file)", "file", c.File, "digest", c.Digest, "package", c.PackagePath)
			continue
		}
		log.Info("plugin verified", "file", c.File, "digest", c.Digest, "package", c.PackagePath, "checksumFile", opts.ChecksumFile)
	}
	return cands, nil
}

// matchChecksums checks that the plugin files and the checksum entries are
// the same set with the same digests.
func matchChecksums(opts Options, entries []Entry, cands []*candidate, present map[string]bool, failed map[*candidate]bool) []error {
	var errs []error
	want := map[string]Entry{}
	conflict := map[string]bool{}
	for _, e := range entries {
		prev, ok := want[e.Base]
		if !ok {
			want[e.Base] = e
			continue
		}
		if prev.Digest != e.Digest && !conflict[e.Base] {
			conflict[e.Base] = true
			errs = append(errs, errorf(ErrChecksumConflict, "checksum file %q lists %q twice with different digests: line %d has %s, line %d has %s",
				opts.ChecksumFile, e.Base, prev.Line, prev.Digest, e.Line, e.Digest))
		}
	}
	for _, c := range cands {
		if conflict[c.File] {
			failed[c] = true
			continue
		}
		e, ok := want[c.File]
		if !ok {
			errs = append(errs, errorf(ErrUnexpectedPlugin, "unexpected plugin %q (sha256 %s): not listed in checksum file %q; list it (sha256sum, or secretless-broker plugins build) or remove it from the directory", c.File, c.Digest, opts.ChecksumFile))
			failed[c] = true
			continue
		}
		if !digestEqual(e.Digest, c.Digest) {
			errs = append(errs, errorf(ErrModifiedPlugin, "modified plugin %q: sha256 is %s, checksum file %q line %d expects %s; if you rebuilt it on purpose, write the checksum file again", c.File, c.Digest, opts.ChecksumFile, e.Line, e.Digest))
			failed[c] = true
		}
	}
	var missing []string
	for base := range want {
		if !present[base] {
			missing = append(missing, base)
		}
	}
	sort.Strings(missing)
	for _, base := range missing {
		e := want[base]
		errs = append(errs, errorf(ErrMissingPlugin, "missing plugin %q: listed in checksum file %q line %d (sha256 %s) but not in plugin directory %q", base, opts.ChecksumFile, e.Line, e.Digest, opts.Dir))
	}
	return errs
}

// digestEqual compares two hex digests in constant time.
func digestEqual(a, b string) bool {
	x, err1 := hex.DecodeString(a)
	y, err2 := hex.DecodeString(b)
	if err1 != nil || err2 != nil {
		return false
	}
	return subtle.ConstantTimeCompare(x, y) == 1
}

const rebuildHint = "rebuild the plugin with the same Go version and build flags as the broker (-race, -trimpath, -gcflags, -tags ...: compare the plugin's and the broker's settings above), from the same checkout/module versions (\"secretless-broker plugins check FILE.so\" names the exact change; \"secretless-broker plugins build\" builds with matching flags)"

// checkCompatibility predicts what plugin.Open would say about each plugin,
// in load order, from the package fingerprints of the executable, of the
// plugins opened earlier in this process and of the plugins before it.
func checkCompatibility(cands []*candidate, failed map[*candidate]bool) []error {
	exe, err := executable()
	if err != nil {
		return []error{errorf(ErrNoPluginSupport, "this broker cannot check plugins: %w", err)}
	}
	if len(exe.pkgs) == 0 {
		return []error{errorf(ErrNoPluginSupport, "this broker executable cannot load plugins: it exports no %s* symbols (built without cgo, statically linked, or without package plugin); rebuild the broker with CGO_ENABLED=1 and gcc installed, without -static", pkgHashPrefix)}
	}
	base := make(map[string]origin, len(exe.pkgs)+len(proc.pkgs))
	for p, fp := range exe.pkgs {
		base[p] = origin{fp: fp}
	}
	for p, o := range proc.pkgs {
		if _, ok := base[p]; !ok {
			base[p] = o
		}
	}
	var errs []error
	byPath := map[string]string{}
	for _, c := range cands {
		if failed[c] || c.bin == nil {
			continue
		}
		b := c.bin
		if b.machine != exe.machine || b.class != exe.class || b.data != exe.data {
			errs = append(errs, errorf(ErrIncompatible, "plugin %q (sha256 %s) is built for %s, the broker for %s", c.File, c.Digest, b.machineName(), exe.machineName()))
			failed[c] = true
			continue
		}
		diff := diffPackages(base, b.pkgs)
		var froms []string
		for from := range diff {
			froms = append(froms, from)
		}
		sort.Strings(froms) // the broker ("") first
		for _, from := range froms {
			pkgs := diff[from]
			if from == "" {
				flags := fmt.Sprintf("plugin: %s, broker: %s", b.buildFlags(), exe.buildFlags())
				if b.buildFlags() == exe.buildFlags() {
					flags += " (the same, so the sources, module versions or source directories differ)"
				}
				errs = append(errs, errorf(ErrIncompatible, "plugin %q (sha256 %s) is incompatible with this broker: %d shared package(s) differ: %s; %s; %s",
					c.File, c.Digest, len(pkgs), listSome(pkgs, 5), flags, rebuildHint))
			} else {
				errs = append(errs, errorf(ErrIncompatible, "plugin %q (sha256 %s) is incompatible with plugin %q (loaded before it): %d shared package(s) differ: %s; build all plugins with the same Go version, flags and module versions as the broker",
					c.File, c.Digest, from, len(pkgs), listSome(pkgs, 5)))
			}
			failed[c] = true
		}
		if p := b.pluginPath; p != "" {
			if other, ok := byPath[p]; ok {
				errs = append(errs, errorf(ErrDuplicate, "duplicate plugin: %q and %q are both builds of package %s; only one can be loaded", other, c.File, p))
				failed[c] = true
			}
			byPath[p] = c.File
			if d, ok := proc.byPath[p]; ok && d != c.Digest {
				errs = append(errs, errorf(ErrAlreadyLoaded, "plugin %q (sha256 %s): package %s was already loaded into this process from other bytes (sha256 %s); a changed plugin needs a broker restart",
					c.File, c.Digest, p, d))
				failed[c] = true
			}
		}
		for p, fp := range b.pkgs {
			if _, ok := base[p]; !ok {
				base[p] = origin{fp: fp, from: c.File}
			}
		}
	}
	return errs
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	if len(q) == 2 {
		return q[0] + " and " + q[1]
	}
	return strings.Join(q, ", ")
}

// sameFile reports whether two paths name one file, however each is
// spelled (relative or absolute, through a symlink).
func sameFile(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// warnWritable warns when path can be written by users other than its
// owner (the permission bits in mask). Verification still holds for this
// start-up, but whoever can rewrite the checksum file (or swap it, through
// its directory) decides what the next start-up accepts, and a plugin
// directory anyone can write to lets anyone stop the broker from starting.
func warnWritable(log *slog.Logger, path, what string, mask os.FileMode) {
	fi, err := os.Stat(path)
	if err != nil {
		return // reported where it is read
	}
	perm := fi.Mode().Perm()
	if perm&mask == 0 {
		return
	}
	shown := uint32(perm)
	if fi.Mode()&os.ModeSticky != 0 {
		if what != "plugin directory" {
			// As /tmp: others may add files but cannot replace the owner's.
			return
		}
		shown |= 0o1000
	}
	who, fix := "its group", "g-w"
	if perm&0o002 != 0 {
		who, fix = "other users", "o-w"
		if mask&0o020 != 0 && perm&0o020 != 0 {
			fix = "go-w"
		}
	}
	risk := "whoever can change it decides which plugins the broker accepts"
	if what == "plugin directory" {
		risk = "anyone can add files to it and so stop the broker from starting"
	}
	log.Warn(fmt.Sprintf("the %s can be written by %s (mode %#o): %s; chmod %s %s", what, who, shown, risk, fix, path), "path", path)
}
