package plugins

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
)

// pkgHashPrefix names the ELF dynamic symbols in which the Go linker exports
// the 8-byte fingerprint of every package of a dynamically linked Go binary
// that can use plugins. plugin.Open compares the fingerprints of all
// packages a plugin shares with the process; comparing them here first
// predicts its verdict without running any plugin code.
const pkgHashPrefix = "go:link.pkghashbytes."

type fingerprint [8]byte

// goBinary is what is learnt about a Go ELF binary without running it.
type goBinary struct {
	class   elf.Class
	data    elf.Data
	machine elf.Machine
	// pkgs maps each package's import path to its fingerprint.
	pkgs map[string]fingerprint
	// goVersion and settings come from the embedded build information;
	// they are empty when there is none.
	goVersion string
	settings  map[string]string
	// pluginPath is the package path of a plugin's main package, the name
	// under which the Go runtime registers it ("" if unknown).
	pluginPath string
}

// buildFlags describes the build settings that change fingerprints, for
// error messages.
func (b *goBinary) buildFlags() string {
	if b.goVersion == "" {
		return "unknown Go version and flags"
	}
	flag := func(k string) string {
		if v := b.settings[k]; v != "" {
			return k + "=" + v
		}
		return k + "=false"
	}
	s := b.goVersion + " " + flag("-race") + " " + flag("-trimpath")
	for _, k := range []string{"-gcflags", "-tags"} {
		if v := b.settings[k]; v != "" {
			s += " " + k + "=" + v
		}
	}
	return s
}

// readELF parses the ELF headers and the package fingerprints of r.
// Malformed input is an error, never a panic.
// A plugin must be a shared object (requireShared); an executable may be
// ET_EXEC or a PIE.
func readELF(r io.ReaderAt, requireShared bool) (b *goBinary, err error) {
	defer func() {
		if p := recover(); p != nil {
			b, err = nil, fmt.Errorf("malformed ELF file (%v)", p)
		}
	}()
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("not an ELF file (%w)", err)
	}
	b = &goBinary{class: f.Class, data: f.Data, machine: f.Machine, pkgs: map[string]fingerprint{}}
	if requireShared && f.Type != elf.ET_DYN {
		return b, fmt.Errorf("not an ELF shared object (type %v)", f.Type)
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		// No dynamic symbol table at all (for example a static executable).
		return b, nil
	}
	for _, s := range syms {
		pkg, ok := strings.CutPrefix(s.Name, pkgHashPrefix)
		if !ok || s.Section == elf.SHN_UNDEF {
			continue
		}
		if s.Size != uint64(len(fingerprint{})) {
			return nil, fmt.Errorf("malformed ELF file: symbol %s has size %d, want 8", s.Name, s.Size)
		}
		var fp fingerprint
		if err := readVirtual(f, s.Value, fp[:]); err != nil {
			return nil, fmt.Errorf("malformed ELF file: symbol %s: %w", s.Name, err)
		}
		b.pkgs[pkg] = fp
	}
	return b, nil
}

// readVirtual reads len(buf) bytes at virtual address addr from the file
// image, using the loadable segments (present even in stripped files).
func readVirtual(f *elf.File, addr uint64, buf []byte) error {
	n := uint64(len(buf))
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || addr < p.Vaddr || addr+n > p.Vaddr+p.Filesz || addr+n < addr {
			continue
		}
		_, err := p.ReadAt(buf, int64(addr-p.Vaddr))
		return err
	}
	return fmt.Errorf("address %#x is not in the file", addr)
}

// inspectPlugin runs every check on the bytes of a would-be plugin that does
// not execute it. The returned error wraps ErrNotGoPlugin.
func inspectPlugin(data []byte) (*goBinary, error) {
	r := bytes.NewReader(data)
	b, err := readELF(r, true)
	if err != nil {
		return nil, errorf(ErrNotGoPlugin, "not a Go plugin: %w", err)
	}
	if len(b.pkgs) == 0 {
		return nil, errorf(ErrNotGoPlugin, "not a Go plugin: no %s* dynamic symbols (a shared library not built with go build -buildmode=plugin)", pkgHashPrefix)
	}
	bi, err := buildinfo.Read(r)
	if err != nil {
		return nil, errorf(ErrNotGoPlugin, "not a Go plugin: no Go build information (%w)", err)
	}
	b.goVersion = bi.GoVersion
	b.settings = settingsMap(bi.Settings)
	if mode := b.settings["-buildmode"]; mode != "plugin" {
		if mode == "" {
			mode = "unknown"
		}
		return nil, errorf(ErrNotGoPlugin, "not a Go plugin: built with -buildmode=%s, want -buildmode=plugin", mode)
	}
	b.pluginPath = pluginPath(bi.Path, b.pkgs)
	return b, nil
}

// pluginPath finds the runtime name of a plugin's main package: its import
// path, or "plugin/unnamed-<hash>" when it was built from a list of files.
func pluginPath(mainPath string, pkgs map[string]fingerprint) string {
	if _, ok := pkgs[mainPath]; ok && mainPath != "" {
		return mainPath
	}
	var found string
	for p := range pkgs {
		if strings.HasPrefix(p, "plugin/unnamed-") {
			if found != "" {
				return ""
			}
			found = p
		}
	}
	return found
}

func settingsMap(s []debug.BuildSetting) map[string]string {
	m := make(map[string]string, len(s))
	for _, kv := range s {
		m[kv.Key] = kv.Value
	}
	return m
}

// executable returns what the running broker executable exports, read once.
var executable = sync.OnceValues(readExecutable)

func readExecutable() (*goBinary, error) {
	// /proc/self/exe is the running image even if the file on disk was
	// replaced since start-up; os.Executable is the portable fallback.
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		path, perr := os.Executable()
		if perr != nil {
			return nil, fmt.Errorf("cannot find the broker executable: %w", perr)
		}
		if f, err = os.Open(path); err != nil {
			return nil, fmt.Errorf("cannot read the broker executable: %w", err)
		}
	}
	defer f.Close()
	b, err := readELF(f, false)
	if err != nil {
		return nil, fmt.Errorf("cannot read the broker executable: %w", err)
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		b.goVersion = bi.GoVersion
		b.settings = settingsMap(bi.Settings)
	}
	return b, nil
}

// origin says who provides a package's fingerprint in the process.
type origin struct {
	fp   fingerprint
	from string // "" for the broker, else a plugin file name
}

// diffPackages returns the packages of pkgs whose fingerprints differ from
// those in base, sorted, grouped by provider ("" = broker).
func diffPackages(base map[string]origin, pkgs map[string]fingerprint) map[string][]string {
	out := map[string][]string{}
	for p, fp := range pkgs {
		if o, ok := base[p]; ok && o.fp != fp {
			out[o.from] = append(out[o.from], p)
		}
	}
	for _, l := range out {
		sort.Strings(l)
	}
	return out
}

// listSome formats a few names and counts the rest.
func listSome(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}

// machineName is the ELF machine/class/byte order, for messages.
func (b *goBinary) machineName() string {
	return fmt.Sprintf("%v/%v/%v", b.machine, b.class, b.data)
}
