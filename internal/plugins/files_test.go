package plugins

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestChecksumFileThatIsNotAFile: a checksum file that is a FIFO or a
// device is refused at once, neither blocking start-up nor read without
// limit.
func TestChecksumFileThatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(t.TempDir(), "sums.fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "sums.txt")
	if err := os.Symlink("/dev/zero", link); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"fifo": fifo, "dev zero": "/dev/zero", "symlink to dev zero": link} {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := Load(Options{Dir: dir, ChecksumFile: path})
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrChecksumFile) || !strings.Contains(err.Error(), "not a regular file") {
					t.Fatalf("err = %v, want a checksum file error saying it is not a regular file", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Load blocked on the checksum file")
			}
			if _, err := ReadFile(path, MaxChecksumFileSize); err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("ReadFile: err = %v", err)
			}
			done2 := make(chan string, 1)
			go func() { done2 <- Fingerprint(dir, path) }()
			select {
			case <-done2:
			case <-time.After(5 * time.Second):
				t.Fatal("Fingerprint blocked on the checksum file")
			}
		})
	}
}

// TestFingerprint: the digest changes with any change of the directory or
// the checksum file, a same-size rewrite with the old modification time
// included, and stays put otherwise.
func TestFingerprint(t *testing.T) {
	dir := t.TempDir()
	plugin := filepath.Join(dir, "a.so")
	sums := filepath.Join(t.TempDir(), "sums.txt")
	for path, data := range map[string]string{plugin: "plugin bytes", sums: "sums\n"} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base := Fingerprint(dir, sums)
	if again := Fingerprint(dir, sums); again != base {
		t.Fatal("fingerprint of an unchanged directory changed")
	}
	st, err := os.Stat(plugin)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(t *testing.T)
	}{
		{"one byte of a plugin, same size and time", func(t *testing.T) {
			if err := os.WriteFile(plugin, []byte("plugin bytez"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(plugin, st.ModTime(), st.ModTime()); err != nil {
				t.Fatal(err)
			}
		}},
		{"a new entry", func(t *testing.T) {
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"the checksum file", func(t *testing.T) {
			if err := os.WriteFile(sums, []byte("sums2\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	prev := base
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.change(t)
			now := Fingerprint(dir, sums)
			if now == prev {
				t.Fatal("fingerprint did not change")
			}
			prev = now
		})
	}
}
