// Package plugintest holds what this repository's plugin tests share for
// checking that a plugin builds the documented way: the module root the
// build commands run in, and the symbols a built .so must export. Plugin
// authors outside this repository test with sdk/connectortest instead.
package plugintest

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ModuleRoot returns the directory of the broker's go.mod, where the
// documented build commands run.
func ModuleRoot(t *testing.T, goBin string) string {
	t.Helper()
	b, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		t.Fatal("not inside the broker's module")
	}
	return filepath.Dir(mod)
}

// CheckExports fails unless the shared object exports pkg.name as a dynamic
// symbol for each name: that is what the broker's plugin.Lookup finds.
func CheckExports(t *testing.T, so, pkg string, names ...string) {
	t.Helper()
	f, err := elf.Open(so)
	if err != nil {
		t.Fatalf("not an ELF file: %v", err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatalf("reading dynamic symbols: %v", err)
	}
	have := make(map[string]bool, len(syms))
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			have[s.Name] = true
		}
	}
	for _, name := range names {
		if !have[pkg+"."+name] {
			t.Errorf("%s does not export function %s.%s", so, pkg, name)
		}
	}
}
