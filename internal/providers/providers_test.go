package providers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/secretless-broker/secretless-broker/internal/config"
)

// credentialFiles makes, in a new directory, a secret file holding
// "file-secret\n", a fifo and a file one byte over MaxFileSize.
func credentialFiles(t *testing.T) (dir, secretFile, fifo, huge string) {
	t.Helper()
	dir = t.TempDir()
	secretFile = filepath.Join(dir, "pw")
	if err := os.WriteFile(secretFile, []byte("file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo = filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge = filepath.Join(dir, "huge")
	if err := os.WriteFile(huge, make([]byte, MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, secretFile, fifo, huge
}

func TestFetch(t *testing.T) {
	dir, secretFile, fifo, huge := credentialFiles(t)
	t.Setenv("SL_TEST_PW", "env-secret")
	t.Setenv("SL_TEST_EMPTY", "")
	r := Default()
	tests := []struct {
		name    string
		cred    config.Credential
		want    string
		wantErr string
	}{
		{"literal", config.Credential{Name: "host", From: "literal", Get: "db"}, "db", ""},
		{"env", config.Credential{Name: "pw", From: "env", Get: "SL_TEST_PW"}, "env-secret", ""},
		{"env empty is a value", config.Credential{Name: "pw", From: "env", Get: "SL_TEST_EMPTY"}, "", ""},
		{"env missing names the variable", config.Credential{Name: "pw", From: "env", Get: "SL_TEST_NOPE"}, "", `credential "pw" from env: environment variable is not set: SL_TEST_NOPE`},
		{"file exact contents", config.Credential{Name: "pw", From: "file", Get: secretFile}, "file-secret\n", ""},
		{"file missing", config.Credential{Name: "pw", From: "file", Get: filepath.Join(dir, "nope")}, "", "no such file"},
		{"fifo is refused, not read", config.Credential{Name: "pw", From: "file", Get: fifo}, "", "not a regular file"},
		{"device is refused", config.Credential{Name: "pw", From: "file", Get: "/dev/zero"}, "", "not a regular file"},
		{"huge file is refused", config.Credential{Name: "pw", From: "file", Get: huge}, "", "larger than"},
		{"directory is refused", config.Credential{Name: "pw", From: "file", Get: dir}, "", "not a regular file"},
		{"unknown provider", config.Credential{Name: "pw", From: "vault9", Get: "x"}, "", `unknown provider "vault9"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Fetch(context.Background(), []config.Credential{tt.cred})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got[tt.cred.Name]) != tt.want {
				t.Fatalf("value = %q, want %q", got[tt.cred.Name], tt.want)
			}
		})
	}
}

func TestFetchIsFreshPerCall(t *testing.T) {
	t.Setenv("SL_TEST_ROT", "one")
	r := Default()
	creds := []config.Credential{{Name: "pw", From: "env", Get: "SL_TEST_ROT"}, {Name: "lit", From: "literal", Get: "keep"}}
	a, err := r.Fetch(context.Background(), creds)
	if err != nil {
		t.Fatal(err)
	}
	a.Zero()
	if string(a["pw"]) != "\x00\x00\x00" || string(a["lit"]) != "\x00\x00\x00\x00" {
		t.Fatalf("not zeroed: %q", a)
	}
	t.Setenv("SL_TEST_ROT", "two")
	b, err := r.Fetch(context.Background(), creds)
	if err != nil {
		t.Fatal(err)
	}
	if string(b["pw"]) != "two" {
		t.Errorf("rotation not seen: %q", b["pw"])
	}
	if string(b["lit"]) != "keep" {
		t.Errorf("zeroing a fetched literal changed the config's value: %q", b["lit"])
	}
}

func TestFileHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (File{}).Get(ctx, "/etc/hostname"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestCheckID(t *testing.T) {
	dir, secretFile, fifo, huge := credentialFiles(t)
	t.Setenv("SL_TEST_SET", "v")
	t.Setenv("SL_TEST_EMPTY", "")
	tests := []struct {
		name, provider, id string
		want               string // "" means no problem
	}{
		{"env set", "env", "SL_TEST_SET", ""},
		{"env set but empty", "env", "SL_TEST_EMPTY", ""},
		{"env not set", "env", "SL_TEST_NOT_SET", "environment variable is not set: SL_TEST_NOT_SET"},
		{"file", "file", secretFile, ""},
		{"file missing", "file", filepath.Join(dir, "nope"), "no such file or directory"},
		{"fifo, not opened", "file", fifo, "not a regular file"},
		{"directory", "file", dir, "not a regular file"},
		{"file too large", "file", huge, "larger than"},
		{"literal is never checked", "literal", "anything", ""},
		{"unknown provider is the parser's business", "nope", "x", ""},
	}
	r := Default()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := r.CheckID(tc.provider, tc.id)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckID: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckID = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestFileRelativePathNamed: an error about a relative credential file
// path says it is read from the working directory.
func TestFileRelativePathNamed(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"check": func() error { return File{}.Check("no-such-credential-file.txt") },
		"get":   func() error { _, err := File{}.Get(context.Background(), "no-such-credential-file.txt"); return err },
	} {
		t.Run(name, func(t *testing.T) {
			err := call()
			if err == nil || !strings.Contains(err.Error(), "read no-such-credential-file.txt (relative to the working directory "+wd+"): no such file") {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if err := (File{}).Check("/no/such/abs/file"); err == nil || strings.Contains(err.Error(), "relative") {
		t.Errorf("absolute path: %v", err)
	}
}
