package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// The loader's limits: how large a plugin file and the checksum file may be.
const (
	MaxPluginSize       = maxPluginSize
	MaxChecksumFileSize = maxChecksumFile
)

// ReadFile reads a file the way the loader does: it must be a regular file
// (a symlink to one is followed) of at most limit bytes; opening never
// blocks on a FIFO, and no more than limit bytes are read, so a path
// naming a FIFO or a device such as /dev/zero fails at once.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|openNonBlock, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		clear(data)
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return data, nil
}

// Fingerprint is a digest of the plugin directory's entries (names, types
// and the contents of regular files) and of the checksum file, for telling
// on reload that either changed since start-up. It reads the way the loader
// does (never blocking on a FIFO, never following a symlink in the
// directory, never more than the loader's limits), and a file it cannot
// read counts as its error text.
func Fingerprint(dir, sumFile string) string {
	h := sha256.New()
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			fmt.Fprintf(h, "%q %s ", e.Name(), e.Type())
			if e.Type().IsRegular() {
				hashFile(h, filepath.Join(dir, e.Name()), os.O_RDONLY|openNoFollow, maxPluginSize)
			}
			h.Write([]byte{'\n'})
		}
	}
	if sumFile != "" {
		hashFile(h, sumFile, os.O_RDONLY|openNonBlock, maxChecksumFile)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hashFile writes the contents of a regular file, at most limit+1 bytes of
// it, to w, or the error that stopped it.
func hashFile(w io.Writer, path string, flags int, limit int64) {
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		fmt.Fprint(w, err)
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		fmt.Fprint(w, "not a regular file", err)
		return
	}
	if _, err := io.Copy(w, io.LimitReader(f, limit+1)); err != nil {
		fmt.Fprint(w, err)
	}
}
