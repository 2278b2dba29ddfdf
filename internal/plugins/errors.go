package plugins

import (
	"errors"
	"fmt"
)

// Sentinel errors, one per failure kind. Every error returned by this package
// wraps at least one of them, so callers can test with errors.Is; the error
// text names the file(s), digests and reason.
var (
	// ErrNoPluginDir: a checksum file was given but the plugin directory
	// does not exist or is not a directory.
	ErrNoPluginDir = errors.New("plugin directory unavailable")
	// ErrChecksumFile: the checksum file cannot be read.
	ErrChecksumFile = errors.New("checksum file unreadable")
	// ErrMalformedChecksum: a line of the checksum file cannot be parsed.
	ErrMalformedChecksum = errors.New("malformed checksum line")
	// ErrChecksumConflict: two checksum entries name the same file with
	// different digests.
	ErrChecksumConflict = errors.New("conflicting checksum entries")
	// ErrUnexpectedEntry: the plugin directory holds something that is not
	// a regular *.so file (directory, symlink, device, socket, README, ...).
	ErrUnexpectedEntry = errors.New("unexpected entry in plugin directory")
	// ErrUnexpectedPlugin: a plugin file is not listed in the checksum file.
	ErrUnexpectedPlugin = errors.New("unexpected plugin")
	// ErrMissingPlugin: the checksum file lists a plugin that is not in the
	// plugin directory.
	ErrMissingPlugin = errors.New("missing plugin")
	// ErrModifiedPlugin: a plugin's digest differs from the checksum file.
	ErrModifiedPlugin = errors.New("modified plugin")
	// ErrDuplicate: two plugin files have identical contents, or are builds
	// of the same Go package (only one of them could ever be opened).
	ErrDuplicate = errors.New("duplicate plugin")
	// ErrReadPlugin: a plugin file cannot be read.
	ErrReadPlugin = errors.New("cannot read plugin")
	// ErrNotGoPlugin: the file is not a Go plugin (-buildmode=plugin). Such
	// a file is never passed to plugin.Open, which would kill the process.
	ErrNotGoPlugin = errors.New("not a Go plugin")
	// ErrIncompatible: the plugin was built differently from the broker or
	// from another plugin (Go version, -race, -trimpath, source checkout,
	// module versions, architecture), so plugin.Open would refuse it.
	ErrIncompatible = errors.New("incompatible plugin")
	// ErrNoPluginSupport: this broker executable cannot load plugins at all
	// (built without cgo, or statically linked).
	ErrNoPluginSupport = errors.New("plugins not supported by this broker")
	// ErrAlreadyLoaded: a different build of the same plugin package was
	// already loaded into this process; Go cannot unload or replace it.
	ErrAlreadyLoaded = errors.New("plugin package already loaded")
	// ErrOpen: plugin.Open failed.
	ErrOpen = errors.New("cannot open plugin")
	// ErrPluginPanic: the plugin panicked in init, PluginInfo or GetXPlugin.
	ErrPluginPanic = errors.New("plugin panicked")
	// ErrBadSymbol: a required symbol is missing, has the wrong type, or
	// returned nil.
	ErrBadSymbol = errors.New("bad plugin symbol")
	// ErrBadInfo: PluginInfo returned a missing key, an unsupported
	// pluginAPIVersion, an unknown type or an invalid id.
	ErrBadInfo = errors.New("bad plugin info")
	// ErrIDConflict: a plugin id collides with a built-in connector or with
	// another plugin.
	ErrIDConflict = errors.New("plugin id conflict")
)

// kindError carries a complete message and wraps a sentinel kind besides
// whatever its message wraps, so the text needs no sentinel prefix.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// errorf formats like fmt.Errorf (%w allowed) and wraps kind too.
func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

var _ error = (*kindError)(nil)
