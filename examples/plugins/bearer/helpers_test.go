package main

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// moduleRoot returns the directory of the broker's go.mod, where the
// documented build commands run.
func moduleRoot(t *testing.T, goBin string) string {
	t.Helper()
	b, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(b)))
}

// checkExports fails unless the shared object exports pkg.name as a dynamic
// symbol for each name: that is what the broker's plugin.Lookup finds.
func checkExports(t *testing.T, so, pkg string, names ...string) {
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
