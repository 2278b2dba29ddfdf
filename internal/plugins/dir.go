package plugins

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxPluginSize caps how much of a plugin file is read into memory.
const maxPluginSize = 1 << 30

// dirEntry is one entry of the plugin directory.
type dirEntry struct {
	name, path string
	// reason is empty for a plugin candidate (a regular *.so file) and
	// otherwise says why the entry is not one ("is a directory", ...).
	reason string
}

// listDir lists every entry of dir (not recursive), sorted by name, and
// classifies it. Only regular files whose name ends in ".so" are plugin
// candidates; the type is taken from the directory entry itself (lstat
// semantics), so a symlink is never followed.
func listDir(dir string) ([]dirEntry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]dirEntry, 0, len(des))
	for _, de := range des {
		out = append(out, dirEntry{
			name:   de.Name(),
			path:   filepath.Join(dir, de.Name()),
			reason: classify(de.Name(), de.Type()),
		})
	}
	return out, nil
}

func classify(name string, mode fs.FileMode) string {
	switch t := mode.Type(); {
	case t == 0:
		if len(name) <= len(".so") || !strings.HasSuffix(name, ".so") {
			return "is not a .so file"
		}
		return ""
	case t&fs.ModeDir != 0:
		return "is a directory"
	case t&fs.ModeSymlink != 0:
		return "is a symbolic link"
	case t&fs.ModeNamedPipe != 0:
		return "is a named pipe"
	case t&fs.ModeSocket != 0:
		return "is a socket"
	case t&fs.ModeDevice != 0:
		return "is a device"
	default:
		return "is not a regular file"
	}
}

// readPluginFile reads a plugin file once. It refuses to follow a symlink
// and to block on a FIFO, and checks after opening that it is still a
// regular file (the entry may have been replaced since it was listed).
func readPluginFile(path string) ([]byte, error) {
	name := filepath.Base(path)
	f, err := os.OpenFile(path, os.O_RDONLY|openNoFollow, 0)
	if err != nil {
		return nil, errorf(ErrReadPlugin, "cannot read plugin %q: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, errorf(ErrReadPlugin, "cannot read plugin %q: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, errorf(ErrUnexpectedEntry, "plugin directory %q: %q %s (it changed while being read)", filepath.Dir(path), name, classify(name, st.Mode()))
	}
	if st.Size() > maxPluginSize {
		return nil, errorf(ErrReadPlugin, "cannot read plugin %q: larger than %d bytes", name, maxPluginSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPluginSize+1))
	if err != nil {
		return nil, errorf(ErrReadPlugin, "cannot read plugin %q: %w", name, err)
	}
	if len(data) > maxPluginSize {
		return nil, errorf(ErrReadPlugin, "cannot read plugin %q: larger than %d bytes", name, maxPluginSize)
	}
	return data, nil
}

// dirExists reports whether dir exists; an existing non-directory is an
// error.
func dirExists(dir string) (bool, error) {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, errorf(ErrNoPluginDir, "plugin directory %q: %w", dir, err)
	}
	if !st.IsDir() {
		return false, errorf(ErrNoPluginDir, "plugin directory %q is not a directory", dir)
	}
	return true, nil
}
