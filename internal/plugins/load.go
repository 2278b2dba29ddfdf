package plugins

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector/http"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// library is an opened plugin.
type library interface {
	Lookup(name string) (any, error)
}

type openResult struct {
	lib library
	err error
}

// beforeOpen, when set by a test, runs after every file has been verified
// and before the first one is opened.
var beforeOpen func()

// openPlugin is plugin.Open (or its non-cgo stand-in); tests replace it to
// simulate failures that need special mounts.
var openPlugin = openLibrary

var validID = regexp.MustCompile(`^[a-z0-9_:.-]+$`)

// Load verifies the plugins exactly as Verify does and then loads them, all
// or nothing: any failure returns a nil slice and an error, and the broker
// must refuse to start. Nothing is opened unless every file passed
// verification.
//
// Each plugin is read once; the bytes that were hashed and checked are
// written to a fresh private directory under opts.TempDir (mode 0700, file
// mode 0500) and that copy is opened, so a file swapped in the plugin
// directory after verification is never loaded. The copy is removed right
// after plugin.Open.
//
// Go cannot unload a plugin: bytes opened once in this process are reused by
// later calls (their PluginInfo and GetXPlugin are called again), and a
// different build of an already loaded plugin package is refused with
// ErrAlreadyLoaded.
func Load(opts Options) ([]Plugin, error) {
	proc.mu.Lock()
	defer proc.mu.Unlock()
	log := opts.logger()
	if !CgoEnabled {
		if names := pluginFiles(opts.Dir); len(names) > 0 {
			return nil, errorf(ErrNoPluginSupport, "this broker was built without cgo and cannot load plugins (plugin directory %q has %s); rebuild the broker with CGO_ENABLED=1 and gcc installed",
				opts.Dir, quoteAll(names))
		}
	}
	cands, err := verify(opts)
	if err != nil {
		return nil, err
	}
	if len(cands) == 0 {
		return nil, nil
	}
	if beforeOpen != nil {
		beforeOpen()
	}
	tempDir := opts.TempDir
	if tempDir == "" {
		tempDir = os.TempDir()
	}
	ids := map[string]string{}
	out := make([]Plugin, 0, len(cands))
	for _, c := range cands {
		lib, err := openVerified(c, tempDir)
		if err != nil {
			return nil, err
		}
		p, err := instantiate(c, lib)
		if err != nil {
			return nil, err
		}
		if slices.Contains(opts.Reserved, p.ID) {
			return nil, errorf(ErrIDConflict, "plugin %q has id %q, which is a built-in connector", p.File, p.ID)
		}
		if other, ok := ids[p.ID]; ok {
			return nil, errorf(ErrIDConflict, "plugins %q and %q both have id %q", other, p.File, p.ID)
		}
		ids[p.ID] = p.File
		out = append(out, p)
	}
	for _, p := range out {
		log.Info("plugin loaded", "file", p.File, "id", p.ID, "type", p.Type, "digest", p.Digest)
	}
	return out, nil
}

// pluginFiles lists the regular *.so files in dir (none if unreadable).
func pluginFiles(dir string) []string {
	if dir == "" {
		return nil
	}
	list, err := listDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range list {
		if e.reason == "" {
			names = append(names, e.name)
		}
	}
	return names
}

// openVerified opens the verified bytes of c through a private copy.
func openVerified(c *candidate, tempDir string) (library, error) {
	if r, ok := proc.opened[c.Digest]; ok {
		if r.err != nil {
			return nil, fmt.Errorf("plugin %q (sha256 %s): these bytes already failed to open in this process, only a restart can retry: %w", c.File, c.Digest, r.err)
		}
		return r.lib, nil
	}
	dir, err := os.MkdirTemp(tempDir, "secretless-plugin-")
	if err != nil {
		return nil, errorf(ErrOpen, "plugin %q: cannot create a private directory for its copy: %w", c.File, err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, errorf(ErrOpen, "plugin %q: %w", c.File, err)
	}
	path := filepath.Join(dir, c.File)
	if err := writeCopy(path, c.data); err != nil {
		return nil, errorf(ErrOpen, "plugin %q: cannot write its private copy: %w", c.File, err)
	}
	lib, err := safeOpen(path)
	if err != nil && strings.Contains(err.Error(), "failed to map segment") {
		// dlopen mapped nothing: the copy is on a noexec mount. Nothing
		// is remembered, so another temporary directory may be tried.
		return nil, errorf(ErrOpen, "plugin %q (sha256 %s): %w; the temporary directory %q is probably on a noexec mount: choose a temporary directory on a filesystem that allows executables",
			c.File, c.Digest, err, tempDir)
	}
	if err != nil && !errors.Is(err, ErrPluginPanic) {
		err = errorf(ErrOpen, "%w", err)
	}
	// The library stays mapped even when Open failed: remember it.
	proc.opened[c.Digest] = &openResult{lib: lib, err: err}
	if p := c.bin.pluginPath; p != "" {
		if _, ok := proc.byPath[p]; !ok {
			proc.byPath[p] = c.Digest
		}
	}
	for p, fp := range c.bin.pkgs {
		if _, ok := proc.pkgs[p]; !ok {
			proc.pkgs[p] = origin{fp: fp, from: c.File}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("plugin %q (sha256 %s): %w", c.File, c.Digest, err)
	}
	return lib, nil
}

func writeCopy(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o500)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// safeOpen opens a plugin and turns a panic in its init into an error.
func safeOpen(path string) (lib library, err error) {
	defer func() {
		if p := recover(); p != nil {
			lib, err = nil, errorf(ErrPluginPanic, "panic in init: %v", p)
		}
	}()
	return openPlugin(path)
}

// call runs f and turns a panic into an error naming the symbol.
func call[T any](name string, f func() T) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = errorf(ErrPluginPanic, "panic in %s: %v", name, p)
		}
	}()
	return f(), nil
}

// instantiate validates the symbols and info of an opened plugin.
func instantiate(c *candidate, lib library) (Plugin, error) {
	p := c.Plugin
	bad := func(kind error, format string, args ...any) (Plugin, error) {
		return Plugin{}, errorf(kind, "plugin %q: %s", c.File, fmt.Sprintf(format, args...))
	}
	sym, err := lib.Lookup(sdk.SymbolPluginInfo)
	if err != nil {
		return bad(ErrBadSymbol, "does not export %s (%v)", sdk.SymbolPluginInfo, err)
	}
	infoFn, ok := sym.(func() map[string]string)
	if !ok {
		return bad(ErrBadSymbol, "symbol %s has type %T, want func() map[string]string", sdk.SymbolPluginInfo, sym)
	}
	info, err := call(sdk.SymbolPluginInfo, infoFn)
	if err != nil {
		return Plugin{}, fmt.Errorf("plugin %q: %w", c.File, err)
	}
	var missing []string
	for _, k := range []string{sdk.KeyPluginAPIVersion, sdk.KeyType, sdk.KeyID, sdk.KeyDescription} {
		if _, ok := info[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return bad(ErrBadInfo, "%s() is missing key(s) %s", sdk.SymbolPluginInfo, strings.Join(missing, ", "))
	}
	p.APIVersion, p.Type, p.ID, p.Description = info[sdk.KeyPluginAPIVersion], info[sdk.KeyType], info[sdk.KeyID], info[sdk.KeyDescription]
	if !slices.Contains(sdk.SupportedPluginAPIVersions, p.APIVersion) {
		return bad(ErrBadInfo, "unsupported %s %q, this broker supports %s", sdk.KeyPluginAPIVersion, p.APIVersion, strings.Join(sdk.SupportedPluginAPIVersions, ", "))
	}
	if !validID.MatchString(p.ID) {
		return bad(ErrBadInfo, "invalid %s %q, want ^[a-z0-9_:.-]+$", sdk.KeyID, p.ID)
	}
	switch p.Type {
	case sdk.TypeTCPConnector:
		get, err := lookupFunc[tcp.Plugin](lib, sdk.SymbolGetTCPPlugin, "func() tcp.Plugin")
		if err != nil {
			return bad(ErrBadSymbol, "%v", err)
		}
		if p.TCP, err = call(sdk.SymbolGetTCPPlugin, get); err != nil {
			return Plugin{}, fmt.Errorf("plugin %q: %w", c.File, err)
		}
		if isNil(p.TCP) {
			return bad(ErrBadSymbol, "%s returned nil", sdk.SymbolGetTCPPlugin)
		}
	case sdk.TypeHTTPConnector:
		get, err := lookupFunc[http.Plugin](lib, sdk.SymbolGetHTTPPlugin, "func() http.Plugin")
		if err != nil {
			return bad(ErrBadSymbol, "%v", err)
		}
		if p.HTTP, err = call(sdk.SymbolGetHTTPPlugin, get); err != nil {
			return Plugin{}, fmt.Errorf("plugin %q: %w", c.File, err)
		}
		if isNil(p.HTTP) {
			return bad(ErrBadSymbol, "%s returned nil", sdk.SymbolGetHTTPPlugin)
		}
	default:
		known := []string{sdk.TypeTCPConnector, sdk.TypeHTTPConnector}
		sort.Strings(known)
		return bad(ErrBadInfo, "unknown %s %q, want one of %s", sdk.KeyType, p.Type, strings.Join(known, ", "))
	}
	return p, nil
}

func lookupFunc[T any](lib library, name, want string) (func() T, error) {
	sym, err := lib.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("does not export %s (%v)", name, err)
	}
	f, ok := sym.(func() T)
	if !ok {
		return nil, fmt.Errorf("symbol %s has type %T, want %s", name, sym, want)
	}
	return f, nil
}

// isNil reports a nil interface or an interface holding a nil pointer, map,
// slice, func or chan.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return rv.IsNil()
	}
	return false
}
