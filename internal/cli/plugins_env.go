package cli

// The plugin author's commands: "plugins env" (what a plugin must match),
// "plugins check" (why a built plugin does or does not match) and
// "plugins build" (build plugins that match, and list them in the checksum
// file).
//
// A Go plugin loads only if every package it shares with the broker was
// compiled identically: same Go release, same fingerprint-changing flags,
// same source, and the same recorded source file names. The file names are
// what trips plugins built outside the broker's checkout: without -trimpath
// they are absolute directories; with -trimpath a dependency's files are
// recorded as module@version/... and the main module's as import paths. So
// besides the build settings (debug/buildinfo), these commands read the
// file names each binary recorded for its packages from its .gopclntab
// (debug/gosym), which is present even in stripped binaries.

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"debug/gosym"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"

	"github.com/secretless-broker/secretless-broker/internal/broker"
	"github.com/secretless-broker/secretless-broker/internal/logging"
	"github.com/secretless-broker/secretless-broker/internal/plugins"
	"github.com/secretless-broker/secretless-broker/sdk"
)

// sdkModule is the module path of the plugin SDK.
const sdkModule = "github.com/secretless-broker/secretless-broker/sdk"

// boolFlags are the boolean build flags that change package fingerprints.
var boolFlags = []string{"-race", "-msan", "-asan", "-trimpath"}

// stringFlags are the build flags with values that change what shared
// packages compile to.
var stringFlags = []string{"-tags", "-gcflags", "-asmflags", "-pgo"}

// envSettings are build settings recorded from the environment that the
// plugin build must repeat.
var envSettings = []string{"GOOS", "GOARCH", "GOAMD64", "GOARM", "GOARM64", "GO386", "GOMIPS", "GOMIPS64", "GOPPC64", "GORISCV64", "GOWASM",
	"GOEXPERIMENT", "GOFIPS140", "CGO_CFLAGS", "CGO_CPPFLAGS", "CGO_CXXFLAGS", "CGO_LDFLAGS"}

// modInfo is one module compiled into a binary.
type modInfo struct {
	Path    string `json:"path"`
	Version string `json:"version"`
	// Replace is the replacement as written in go.mod ("./sdk",
	// "/abs/dir", or "other/module v1.2.3"), empty when not replaced.
	Replace string `json:"replace,omitempty"`
	// Dir is the module's root as recorded in the binary's file names: an
	// absolute directory, or module@version / the module path when built
	// with -trimpath. Empty when no function of the module was found.
	Dir string `json:"compiledDir,omitempty"`
}

// pluginEnv is everything a plugin build must match, read from a binary.
type pluginEnv struct {
	Broker      string            `json:"brokerVersion,omitempty"`
	GoVersion   string            `json:"goVersion"`
	GOOS        string            `json:"goos"`
	GOARCH      string            `json:"goarch"`
	Cgo         bool              `json:"cgo"`
	Flags       map[string]string `json:"flags"`       // boolFlags and stringFlags, "" when unset
	Environment map[string]string `json:"environment"` // envSettings that were recorded
	// GOROOT is where the Go toolchain's standard library was when the
	// binary was built ("" with -trimpath, where it does not matter).
	GOROOT     string    `json:"goroot"`
	PluginAPIs []string  `json:"pluginAPIVersions,omitempty"`
	Main       modInfo   `json:"mainModule"`
	SDK        *modInfo  `json:"sdk,omitempty"`
	Modules    []modInfo `json:"modules"`
	BuildFlags []string  `json:"buildFlags"` // the go build flags a plugin needs
	// pkgDirs maps each package to the directory its files were compiled
	// from, as recorded in the binary.
	pkgDirs map[string]string
}

func (e *pluginEnv) trimpath() bool { return e.Flags["-trimpath"] == "true" }

// module returns the module a package belongs to ("" for the standard
// library) by longest path prefix.
func (e *pluginEnv) module(pkg string) *modInfo {
	var best *modInfo
	consider := func(m *modInfo) {
		if (pkg == m.Path || strings.HasPrefix(pkg, m.Path+"/")) && (best == nil || len(m.Path) > len(best.Path)) {
			best = m
		}
	}
	if e.Main.Path != "" {
		consider(&e.Main)
	}
	for i := range e.Modules {
		consider(&e.Modules[i])
	}
	return best
}

// readEnv builds a pluginEnv from build information and the ELF file of
// the same binary.
func readEnv(bi *debug.BuildInfo, f *elf.File) (*pluginEnv, error) {
	e := &pluginEnv{GoVersion: bi.GoVersion, Flags: map[string]string{}, Environment: map[string]string{}}
	set := map[string]string{}
	for _, s := range bi.Settings {
		set[s.Key] = s.Value
	}
	e.GOOS, e.GOARCH, e.Cgo = set["GOOS"], set["GOARCH"], set["CGO_ENABLED"] == "1"
	for _, k := range boolFlags {
		e.Flags[k] = "false"
		if set[k] == "true" {
			e.Flags[k] = "true"
		}
	}
	for _, k := range stringFlags {
		e.Flags[k] = set[k]
	}
	for _, k := range envSettings {
		if v, ok := set[k]; ok {
			e.Environment[k] = v
		}
	}
	e.Main = modInfo{Path: bi.Main.Path, Version: bi.Main.Version}
	for _, d := range bi.Deps {
		m := modInfo{Path: d.Path, Version: d.Version}
		if d.Replace != nil {
			m.Replace = strings.TrimSpace(d.Replace.Path + " " + strings.TrimPrefix(d.Replace.Version, "(devel)"))
		}
		e.Modules = append(e.Modules, m)
	}
	dirs, err := compiledDirs(f)
	if err != nil {
		return nil, err
	}
	e.pkgDirs = map[string]string{}
	roots := map[*modInfo]map[string]int{}
	goroots := map[string]int{}
	for pkg, byDir := range dirs {
		m := e.module(pkg)
		rel := "/" + pkg // standard library: GOROOT/src/<pkg>, or <pkg> when trimmed
		if m != nil {
			rel = strings.TrimPrefix(pkg, m.Path)
		}
		dir := pickDir(byDir, rel)
		if dir == "" {
			continue
		}
		e.pkgDirs[pkg] = dir
		if m == nil {
			if root, ok := strings.CutSuffix(dir, "/src"+rel); ok {
				goroots[root]++
			} else if dir == pkg {
				goroots[""]++
			}
			continue
		}
		root := strings.TrimSuffix(dir, rel)
		if rel == "" {
			root = dir
		}
		if roots[m] == nil {
			roots[m] = map[string]int{}
		}
		roots[m][root]++
	}
	e.GOROOT = mostCommon(goroots)
	if e.Main.Path != "" {
		e.Main.Dir = mostCommon(roots[&e.Main])
	}
	for i := range e.Modules {
		e.Modules[i].Dir = mostCommon(roots[&e.Modules[i]])
		if e.Modules[i].Path == sdkModule {
			e.SDK = &e.Modules[i]
		}
	}
	if e.SDK == nil && e.Main.Path == sdkModule {
		e.SDK = &e.Main
	}
	e.BuildFlags = pluginBuildFlags(e)
	return e, nil
}

// pickDir returns the most frequent directory of a package's files that
// ends with the package's path relative to its module.
func pickDir(byDir map[string]int, rel string) string {
	ok := map[string]int{}
	for d, n := range byDir {
		if rel == "" || strings.HasSuffix(d, rel) || d == strings.TrimPrefix(rel, "/") {
			ok[d] = n
		}
	}
	return mostCommon(ok)
}

func mostCommon(m map[string]int) string {
	best, n := "", 0
	for k, c := range m {
		if c > n || (c == n && k < best) {
			best, n = k, c
		}
	}
	return best
}

// compiledDirs reads a Go binary's function table and returns, for every
// package, how many functions were compiled from each directory.
func compiledDirs(f *elf.File) (out map[string]map[string]int, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = nil, fmt.Errorf("malformed Go function table (%v)", p)
		}
	}()
	pcln, text := f.Section(".gopclntab"), f.Section(".text")
	if pcln == nil || text == nil {
		return nil, errors.New("no Go function table (.gopclntab)")
	}
	data, err := pcln.Data()
	if err != nil {
		return nil, fmt.Errorf("reading .gopclntab: %w", err)
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
	if err != nil {
		return nil, fmt.Errorf("reading .gopclntab: %w", err)
	}
	out = map[string]map[string]int{}
	for i := range tab.Funcs {
		fn := &tab.Funcs[i]
		pkg := fn.PackageName()
		if pkg == "" || strings.HasPrefix(pkg, "go:") || strings.HasPrefix(pkg, "type:") {
			continue
		}
		file, _, _ := tab.PCToLine(fn.Entry)
		if !strings.HasSuffix(file, ".go") {
			continue
		}
		if out[pkg] == nil {
			out[pkg] = map[string]int{}
		}
		out[pkg][path.Dir(filepath.ToSlash(file))]++
	}
	return out, nil
}

// selfEnv describes the running broker.
func selfEnv() (*pluginEnv, error) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil, errors.New("this broker binary has no Go build information")
	}
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		p, perr := os.Executable()
		if perr != nil {
			return nil, fmt.Errorf("cannot find the broker executable: %w", perr)
		}
		if exe, err = os.Open(p); err != nil {
			return nil, fmt.Errorf("cannot read the broker executable: %w", err)
		}
	}
	defer exe.Close()
	f, err := elf.NewFile(exe)
	if err != nil {
		return nil, fmt.Errorf("cannot read the broker executable: %w", err)
	}
	e, err := readEnv(bi, f)
	if err != nil {
		return nil, fmt.Errorf("the broker executable: %w", err)
	}
	e.Broker = Version
	e.PluginAPIs = sdk.SupportedPluginAPIVersions
	return e, nil
}

// fileEnv describes a built plugin.
func fileEnv(name string) (*pluginEnv, error) {
	bi, err := buildinfo.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("not a Go binary with build information: %w", err)
	}
	f, err := elf.Open(name)
	if err != nil {
		return nil, fmt.Errorf("not an ELF file: %w", err)
	}
	defer f.Close()
	return readEnv(bi, f)
}

// pluginBuildFlags returns the go build flags a plugin needs, besides
// -buildmode=plugin and -o, to match e.
func pluginBuildFlags(e *pluginEnv) []string {
	var out []string
	for _, k := range boolFlags {
		if e.Flags[k] == "true" {
			out = append(out, k)
		}
	}
	for _, k := range stringFlags {
		if v := e.Flags[k]; v != "" {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// explicitFlags is pluginBuildFlags with the boolean flags and -pgo spelled
// out. Empty string flags are left out: go records "-asmflags=" in the
// build information, and the result should be the very bytes a plain
// "go build -buildmode=plugin" gives. buildEnv drops these flags from
// GOFLAGS instead.
func explicitFlags(e *pluginEnv) []string {
	var out []string
	for _, k := range boolFlags {
		out = append(out, k+"="+e.Flags[k])
	}
	for _, k := range stringFlags {
		v := e.Flags[k]
		if k == "-pgo" && v == "" {
			v = "off"
		}
		if v != "" {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// cleanGOFLAGS removes the flags that change fingerprints from a GOFLAGS
// value; the plugin build sets them itself.
func cleanGOFLAGS(v string) string {
	var keep []string
	for _, f := range strings.Fields(v) {
		name, _, _ := strings.Cut(strings.TrimPrefix(f, "-"), "=")
		if slices.Contains(boolFlags, "-"+name) || slices.Contains(stringFlags, "-"+name) {
			continue
		}
		keep = append(keep, f)
	}
	return strings.Join(keep, " ")
}

// buildEnv is the environment of the plugin's go commands.
func buildEnv(e *pluginEnv) []string {
	env := append(os.Environ(), "CGO_ENABLED=1", "GOTOOLCHAIN=local", "GOOS="+e.GOOS, "GOARCH="+e.GOARCH,
		"GOFLAGS="+cleanGOFLAGS(os.Getenv("GOFLAGS")))
	for _, k := range envSettings {
		if k == "GOOS" || k == "GOARCH" {
			continue
		}
		env = append(env, k+"="+e.Environment[k]) // unset ones are cleared, the default
	}
	return env
}

// sdkRequirement returns the go.mod lines a plugin needs for the SDK.
func sdkRequirement(e *pluginEnv) []string {
	if e.SDK == nil {
		return nil
	}
	req := "require " + sdkModule + " " + e.SDK.Version
	switch {
	case e.trimpath():
		if e.SDK.Replace != "" {
			return []string{req, "replace " + sdkModule + " => /path/to/a/copy/of/the/sdk"}
		}
		return []string{req}
	case e.SDK.Dir != "" && moduleCache(e.SDK) == "":
		return []string{req, "replace " + sdkModule + " => " + e.SDK.Dir}
	default:
		return []string{req}
	}
}

// moduleCache returns the GOMODCACHE a module was compiled from, or "".
func moduleCache(m *modInfo) string {
	suffix := "/" + escapeModulePath(m.Path) + "@" + m.Version
	if c, ok := strings.CutSuffix(m.Dir, suffix); ok && strings.HasPrefix(c, "/") {
		return c
	}
	return ""
}

// escapeModulePath escapes upper-case letters as the module cache does.
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./:,@+%", r)
		}) < 0 {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// printEnv writes the human-readable form of "plugins env".
func printEnv(w io.Writer, e *pluginEnv) {
	fmt.Fprintf(w, "secretless-broker %s: a plugin loads only if it was built like this\n\n", e.Broker)
	goroot := e.GOROOT
	if e.trimpath() {
		goroot = "not recorded (-trimpath)"
	}
	rows := [][2]string{
		{"go", e.GoVersion + "   (the exact release)"},
		{"GOROOT", goroot},
		{"GOOS/GOARCH", e.GOOS + "/" + e.GOARCH},
		{"cgo", fmt.Sprintf("%v   (required: build with CGO_ENABLED=1 and a C compiler)", e.Cgo)},
	}
	for _, k := range boolFlags {
		rows = append(rows, [2]string{k, e.Flags[k]})
	}
	for _, k := range stringFlags {
		rows = append(rows, [2]string{k, orNone(e.Flags[k])})
	}
	var envKeys []string
	for k := range e.Environment {
		envKeys = append(envKeys, k)
	}
	sort.Strings(envKeys)
	for _, k := range envKeys {
		if k != "GOOS" && k != "GOARCH" {
			rows = append(rows, [2]string{k, orNone(e.Environment[k])})
		}
	}
	rows = append(rows, [2]string{"plugin API", strings.Join(e.PluginAPIs, ", ")})
	if e.SDK != nil {
		v := e.SDK.Path + " " + e.SDK.Version
		if e.SDK.Replace != "" {
			v += " => " + e.SDK.Replace
		}
		rows = append(rows, [2]string{"SDK module", v}, [2]string{"SDK compiled", orNone(e.SDK.Dir)})
	}
	for _, r := range rows {
		fmt.Fprintf(w, "  %-14s %s\n", r[0], r[1])
	}

	fmt.Fprintf(w, "\nThe plugin's go.mod:\n  go %s\n", goLine(e.GoVersion))
	for _, l := range sdkRequirement(e) {
		fmt.Fprintf(w, "  %s\n", l)
	}
	if e.trimpath() {
		fmt.Fprintf(w, "  (built with -trimpath: the recorded file names are module@version, so the SDK must be\n   required at exactly %s with identical contents; its directory does not matter)\n", e.SDK.Version)
	} else {
		fmt.Fprintf(w, "  (built without -trimpath: the recorded file names are absolute, so the SDK must be compiled\n   from exactly the directory above, and the standard library from %s)\n", e.GOROOT)
	}

	fmt.Fprintf(w, "\nBuild it from the plugin's directory with:\n  %s\n", shellJoin(append([]string{"CGO_ENABLED=1", "GOTOOLCHAIN=local", "go", "build", "-buildmode=plugin"},
		append(pluginBuildFlags(e), "-o", "/path/to/plugins/NAME.so", ".")...)))
	fmt.Fprintf(w, "  (GOFLAGS must not add -race, -trimpath, -tags, -gcflags, -asmflags or -pgo; -ldflags do not matter)\n")
	fmt.Fprintf(w, "or let the broker choose the flags, check the result and update the checksum file:\n  secretless-broker plugins build -o /path/to/plugins -s /path/to/PLUGINS_SHA256SUM.txt /path/to/plugin/dir\n")

	fmt.Fprintf(w, "\nModules compiled into the broker. A plugin that imports a package of one of them must use the same version")
	if e.trimpath() {
		fmt.Fprintf(w, ":\n")
	} else {
		fmt.Fprintf(w, ",\ncompiled from the same directory:\n")
	}
	for _, m := range e.Modules {
		v := m.Version
		if m.Replace != "" {
			v += " => " + m.Replace
		}
		fmt.Fprintf(w, "  %-55s %-36s %s\n", m.Path, v, m.Dir)
	}
}

// goLine is the go.mod "go" line for a Go release ("go1.26.8" -> "1.26").
func goLine(v string) string {
	v = strings.TrimPrefix(v, "go")
	major, rest, _ := strings.Cut(v, ".")
	minor := strings.TrimRightFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	if minor == "" {
		return major
	}
	return major + "." + minor
}

func pluginsEnv(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("plugins env", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, "plugins env: unexpected argument %q (to check a built plugin use \"plugins check FILE.so\")", fs.Arg(0))
	}
	e, err := selfEnv()
	if err != nil {
		return fail(stderr, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(e); err != nil {
			return fail(stderr, err)
		}
		return ExitOK
	}
	printEnv(stdout, e)
	if !e.Cgo || !plugins.CgoEnabled {
		fmt.Fprintf(stdout, "\nWARNING: this broker was built with CGO_ENABLED=0 and cannot load any plugin; rebuild it with cgo.\n")
	}
	return ExitOK
}

// explain compares a built plugin with the broker and returns one line per
// difference, each saying what to change.
func explain(b, p *pluginEnv) []string {
	var out []string
	if p.GoVersion != b.GoVersion {
		out = append(out, fmt.Sprintf("Go release: the plugin was built with %s, the broker with %s; build the plugin with Go %s",
			p.GoVersion, b.GoVersion, strings.TrimPrefix(b.GoVersion, "go")))
	}
	if p.GOOS != b.GOOS || p.GOARCH != b.GOARCH {
		out = append(out, fmt.Sprintf("platform: the plugin is for %s/%s, the broker for %s/%s; build with GOOS=%s GOARCH=%s",
			p.GOOS, p.GOARCH, b.GOOS, b.GOARCH, b.GOOS, b.GOARCH))
	}
	for _, k := range boolFlags {
		if p.Flags[k] != b.Flags[k] {
			fix := "add " + k
			if b.Flags[k] != "true" {
				fix = "remove " + k
			}
			out = append(out, fmt.Sprintf("%s: the plugin was built with %s=%s, the broker with %s=%s; %s (check GOFLAGS too)",
				k, k, p.Flags[k], k, b.Flags[k], fix))
		}
	}
	for _, k := range stringFlags {
		pv, bv := p.Flags[k], b.Flags[k]
		if k == "-pgo" && pv == "off" {
			pv = ""
		}
		if pv != bv && !(k == "-gcflags" && !strings.Contains(pv+bv, "all=")) {
			fix := "build with " + k + "=" + bv
			if bv == "" {
				fix = "build without " + k
				if k == "-pgo" {
					fix = "build with -pgo=off"
				}
			}
			out = append(out, fmt.Sprintf("%s: the plugin was built with %q, the broker with %q; %s", k, pv, bv, fix))
		}
	}
	for _, k := range []string{"GOEXPERIMENT", "GOFIPS140"} {
		if p.Environment[k] != b.Environment[k] {
			out = append(out, fmt.Sprintf("%s: the plugin was built with %q, the broker with %q; build with %s=%s", k, p.Environment[k], b.Environment[k], k, b.Environment[k]))
		}
	}
	if len(out) > 0 {
		// Different flags change every shared package; the file names
		// below would only repeat that.
		return out
	}
	return append(out, explainSources(b, p.pkgDirs, func(pkg string) *modInfo { return p.module(pkg) })...)
}

// explainSources compares the directories shared packages are compiled
// from, given the plugin's package directories and modules.
func explainSources(b *pluginEnv, pluginDirs map[string]string, pluginModule func(string) *modInfo) []string {
	var out []string
	stdDiffers := false
	type modDiff struct {
		plugin *modInfo
		broker *modInfo
		pDir   string
	}
	diffs := map[string]*modDiff{}
	var order []string
	for pkg, pdir := range pluginDirs {
		bdir, ok := b.pkgDirs[pkg]
		if !ok || bdir == pdir {
			continue
		}
		bm := b.module(pkg)
		if bm == nil {
			stdDiffers = true
			continue
		}
		if _, seen := diffs[bm.Path]; !seen {
			pm := pluginModule(pkg)
			pRoot := pdir
			if pm != nil {
				pRoot = strings.TrimSuffix(pdir, strings.TrimPrefix(pkg, pm.Path))
			}
			diffs[bm.Path] = &modDiff{plugin: pm, broker: bm, pDir: pRoot}
			order = append(order, bm.Path)
		}
	}
	if stdDiffers {
		if b.trimpath() {
			out = append(out, "standard library: compiled from a different place; build with -trimpath, as the broker was")
		} else {
			out = append(out, fmt.Sprintf("standard library: the broker was built without -trimpath by the Go installed in %s; build the plugin with the go command of that installation (%s/bin/go), not a copy elsewhere", b.GOROOT, b.GOROOT))
		}
	}
	sort.Strings(order)
	for _, mp := range order {
		d := diffs[mp]
		bm := d.broker
		pv := "?"
		if d.plugin != nil {
			pv = d.plugin.Version
		}
		switch {
		case d.plugin != nil && d.plugin.Path != bm.Path:
			out = append(out, fmt.Sprintf("module %s: the broker has it as a module of its own, the plugin compiles it as part of %s; require %s %s in the plugin's go.mod instead",
				bm.Path, d.plugin.Path, bm.Path, bm.Version))
		case pv != bm.Version:
			out = append(out, fmt.Sprintf("module %s: the plugin requires %s, the broker was built with %s; require exactly that: go mod edit -require=%s@%s",
				bm.Path, pv, bm.Version, bm.Path, bm.Version))
		case b.trimpath():
			out = append(out, fmt.Sprintf("module %s: recorded as %s in the plugin, %s in the broker; build with -trimpath and require version %s", bm.Path, d.pDir, bm.Dir, bm.Version))
		case moduleCache(bm) != "":
			out = append(out, fmt.Sprintf("module %s %s: the plugin compiles it from %s, the broker from %s; build the plugin with GOMODCACHE=%s and without a replace directive for it",
				bm.Path, bm.Version, d.pDir, bm.Dir, moduleCache(bm)))
		default:
			out = append(out, fmt.Sprintf("module %s: the plugin compiles it from %s, the broker from %s; the broker was built without -trimpath, so the directory must be the same: go mod edit -replace=%s=%s",
				bm.Path, d.pDir, bm.Dir, bm.Path, bm.Dir))
		}
	}
	return out
}

// checkFile says whether one built plugin would load, and why not.
func checkFile(b *pluginEnv, name string) (problems []string, verdict string) {
	data, err := plugins.ReadFile(name, plugins.MaxPluginSize)
	if err != nil {
		return []string{err.Error()}, ""
	}
	dir, err := os.MkdirTemp("", "secretless-check-")
	if err != nil {
		return []string{err.Error()}, ""
	}
	defer os.RemoveAll(dir)
	base := filepath.Base(name)
	if len(base) <= len(".so") || !strings.HasSuffix(base, ".so") {
		return []string{fmt.Sprintf("%s: the broker loads only files named NAME.so from its plugin directory", displayName(base))}, ""
	}
	if err := os.WriteFile(filepath.Join(dir, base), data, 0o600); err != nil {
		return []string{err.Error()}, ""
	}
	res, verr := plugins.Verify(plugins.Options{Dir: dir, Reserved: broker.BuiltinIDs(), Logger: logging.New(io.Discard, false)})
	if verr == nil {
		v := "compatible with this broker"
		if len(res) == 1 {
			v += " (package " + res[0].PackagePath + ", " + res[0].GoVersion + ")"
		}
		return nil, v
	}
	problems = splitErrors(verr)
	if !errors.Is(verr, plugins.ErrIncompatible) {
		return problems, ""
	}
	p, err := fileEnv(name)
	if err != nil {
		return append(problems, "cannot explain: "+err.Error()), ""
	}
	why := explain(b, p)
	if len(why) == 0 {
		why = []string{"same Go release, flags and source locations, so the source code of the shared packages differs: build the plugin against the SDK (and any shared module) from exactly the sources the broker was built from"}
	}
	for _, w := range why {
		problems = append(problems, "to fix: "+w)
	}
	return problems, ""
}

func pluginsCheck(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageErr(stderr, "plugins check: want one or more plugin files")
	}
	b, err := selfEnv()
	if err != nil {
		return fail(stderr, err)
	}
	failed := 0
	for _, name := range args {
		problems, verdict := checkFile(b, name)
		if len(problems) == 0 {
			fmt.Fprintf(stdout, "ok      %s: %s\n", displayName(name), verdict)
			continue
		}
		failed++
		fmt.Fprintf(stdout, "FAILED  %s:\n", displayName(name))
		for _, p := range problems {
			fmt.Fprintf(stdout, "    %s\n", p)
		}
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "secretless-broker: %d of %d plugin(s) would not load\n", failed, len(args))
		return ExitFailure
	}
	return ExitOK
}

// listedPackage is one line of "go list -deps" in the plugin's directory.
type listedPackage struct {
	ImportPath string
	Dir        string
	Standard   bool
	Module     *struct {
		Path    string
		Version string
		Main    bool
	}
}

// goCmd runs the go command in dir and returns its standard output.
func goCmd(goBin, dir string, env []string, args ...string) ([]byte, error) {
	cmd := exec.Command(goBin, args...)
	cmd.Dir, cmd.Env = dir, env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s (in %s): %v\n%s", goBin, strings.Join(args, " "), dir, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// preflight checks, before building, that the go command and the plugin
// module in dir would compile the packages the plugin shares with the
// broker from the same places. Every problem says what to change.
func preflight(b *pluginEnv, goBin, dir string, env []string) []string {
	out, err := goCmd(goBin, dir, env, "env", "-json", "GOVERSION", "GOROOT", "CC", "GOFLAGS")
	if err != nil {
		return []string{err.Error()}
	}
	var ge struct{ GOVERSION, GOROOT, CC, GOFLAGS string }
	if err := json.Unmarshal(out, &ge); err != nil {
		return []string{fmt.Sprintf("go env: %v", err)}
	}
	var problems []string
	if ge.GOVERSION != b.GoVersion {
		return []string{fmt.Sprintf("the go command %q is %s, this broker was built with %s: install Go %s and put it first in PATH, or pass -go /path/to/that/go",
			goBin, ge.GOVERSION, b.GoVersion, strings.TrimPrefix(b.GoVersion, "go"))}
	}
	if !b.trimpath() && b.GOROOT != "" && filepath.Clean(ge.GOROOT) != filepath.Clean(b.GOROOT) {
		problems = append(problems, fmt.Sprintf("the go command's GOROOT is %s, but this broker was built without -trimpath by the Go in %s: use %s/bin/go (pass -go)",
			ge.GOROOT, b.GOROOT, b.GOROOT))
	}
	cc := strings.Fields(ge.CC)
	if len(cc) == 0 {
		cc = []string{"gcc"}
	}
	if _, err := exec.LookPath(cc[0]); err != nil {
		problems = append(problems, fmt.Sprintf("cgo needs the C compiler %q, which is not installed (on Debian: apt-get install gcc)", cc[0]))
	}
	args := append([]string{"list", "-deps", "-json=ImportPath,Dir,Standard,Module"}, explicitTags(b)...)
	out, err = goCmd(goBin, dir, env, append(args, ".")...)
	if err != nil {
		return append(problems, err.Error())
	}
	dirs := map[string]string{}
	mods := map[string]*modInfo{}
	dec := json.NewDecoder(bytes.NewReader(out))
	mainPkg := ""
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return append(problems, fmt.Sprintf("go list: %v", err))
		}
		mainPkg = p.ImportPath // the last package listed is the one asked for
		var m *modInfo
		if p.Module != nil {
			m = &modInfo{Path: p.Module.Path, Version: p.Module.Version}
			mods[p.ImportPath] = m
		}
		dirs[p.ImportPath] = compiledDir(b.trimpath(), p, m)
	}
	if mainPkg == "" {
		return append(problems, fmt.Sprintf("no Go package in %s", dir))
	}
	delete(dirs, mainPkg) // the plugin's own package is never shared
	return append(problems, explainSources(b, dirs, func(pkg string) *modInfo { return mods[pkg] })...)
}

// explicitTags returns the -tags flag of the broker for go list.
func explicitTags(b *pluginEnv) []string {
	return []string{"-tags=" + b.Flags["-tags"]}
}

// compiledDir is the directory name the compiler will record for a
// package's files, as cmd/go computes it.
func compiledDir(trimpath bool, p listedPackage, m *modInfo) string {
	if !trimpath {
		return filepath.ToSlash(p.Dir)
	}
	if m != nil && m.Version != "" {
		return m.Path + "@" + m.Version + strings.TrimPrefix(p.ImportPath, m.Path)
	}
	return p.ImportPath
}

func pluginsBuild(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("plugins build", stderr)
	outDir := fs.String("o", "", "plugin directory to write NAME.so into")
	sumFile := fs.String("s", "", "checksum file to write or update (default: PLUGINS_SHA256SUM.txt beside the plugin directory, which is not changed if it lists plugins the directory does not have)")
	goBin := fs.String("go", "go", "go command")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if *outDir == "" {
		return usageErr(stderr, "plugins build: -o DIR is required")
	}
	if fs.NArg() == 0 {
		return usageErr(stderr, "plugins build: want one or more plugin package directories")
	}
	dir, err := filepath.Abs(*outDir)
	if err != nil {
		return fail(stderr, err)
	}
	sums := *sumFile
	if sums == "" {
		sums = filepath.Join(filepath.Dir(dir), "PLUGINS_SHA256SUM.txt")
	}
	if sums, err = filepath.Abs(sums); err != nil {
		return fail(stderr, err)
	}
	if filepath.Dir(sums) == dir {
		return usageErr(stderr, "plugins build: the checksum file must not be inside the plugin directory %s (the broker refuses every entry that is not a plugin)", dir)
	}
	b, err := selfEnv()
	if err != nil {
		return fail(stderr, err)
	}
	if !b.Cgo || !plugins.CgoEnabled {
		return fail(stderr, errors.New("this broker was built with CGO_ENABLED=0 and cannot load plugins; rebuild the broker with cgo first"))
	}
	env := buildEnv(b)
	type job struct{ pkgDir, name string }
	var jobs []job
	names := map[string]string{}
	for _, a := range fs.Args() {
		pd, err := filepath.Abs(a)
		if err != nil {
			return fail(stderr, err)
		}
		name := filepath.Base(pd) + ".so"
		if other, ok := names[name]; ok {
			return usageErr(stderr, "plugins build: %s and %s would both be written as %s", other, a, name)
		}
		names[name] = a
		jobs = append(jobs, job{pd, name})
	}

	var problems []string
	for _, j := range jobs {
		for _, p := range preflight(b, *goBin, j.pkgDir, env) {
			problems = append(problems, fmt.Sprintf("%s: %s", j.pkgDir, p))
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(stderr, "secretless-broker: %s\n", p)
		}
		fmt.Fprintf(stderr, "secretless-broker: nothing built; the plugin would not load into this broker (%d problem(s))\n", len(problems))
		return ExitFailure
	}

	for _, d := range []string{dir, filepath.Dir(sums)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail(stderr, err)
		}
	}
	// Refuse a plugin directory or checksum file that cannot be updated
	// before spending time on builds.
	planned := map[string]string{}
	for _, j := range jobs {
		planned[j.name] = strings.Repeat("0", 64)
	}
	_, dropped, err := mergeChecksums(dir, sums, planned)
	if err != nil {
		return fail(stderr, err)
	}
	if *sumFile == "" && len(dropped) > 0 {
		// The default file sits beside the plugin directory, where another
		// directory's file may sit too: never drop entries from it unasked.
		return usageErr(stderr, "plugins build: %s (the default -s) lists plugins that are not in %s, so it may belong to another plugin directory: %s; pass -s FILE to write that file anyway, or another one",
			sums, dir, strings.Join(dropped, "; "))
	}
	staging, err := os.MkdirTemp(filepath.Dir(dir), ".secretless-plugins-build-")
	if err != nil {
		return fail(stderr, err)
	}
	defer os.RemoveAll(staging)
	flags := explicitFlags(b)
	built := map[string]string{}
	for _, j := range jobs {
		out := filepath.Join(staging, j.name)
		cmdArgs := append(append([]string{"build", "-buildmode=plugin"}, flags...), "-o", out, ".")
		fmt.Fprintf(stdout, "building %s: (cd %s && %s)\n", j.name, shellJoin([]string{j.pkgDir}), shellJoin(append([]string{"CGO_ENABLED=1", "GOTOOLCHAIN=local", *goBin}, cmdArgs...)))
		cmd := exec.Command(*goBin, cmdArgs...)
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = j.pkgDir, env, stderr, stderr
		if err := cmd.Run(); err != nil {
			return fail(stderr, fmt.Errorf("building %s failed: %v", j.pkgDir, err))
		}
		data, err := plugins.ReadFile(out, plugins.MaxPluginSize)
		if err != nil {
			return fail(stderr, err)
		}
		sum := sha256.Sum256(data)
		built[j.name] = hex.EncodeToString(sum[:])
	}
	// Every new plugin must load into this broker, next to the others.
	if _, err := plugins.Verify(plugins.Options{Dir: staging, Reserved: broker.BuiltinIDs(), Logger: logging.New(io.Discard, false)}); err != nil {
		for _, p := range splitErrors(err) {
			fmt.Fprintf(stderr, "secretless-broker: %s\n", p)
		}
		for _, j := range jobs {
			if pe, ferr := fileEnv(filepath.Join(staging, j.name)); ferr == nil {
				for _, w := range explain(b, pe) {
					fmt.Fprintf(stderr, "secretless-broker: %s: to fix: %s\n", j.name, w)
				}
			}
		}
		return fail(stderr, errors.New("the built plugins would not load into this broker; nothing was written"))
	}
	content, notes, err := mergeChecksums(dir, sums, built)
	if err != nil {
		return fail(stderr, err)
	}
	for _, j := range jobs {
		if err := os.Rename(filepath.Join(staging, j.name), filepath.Join(dir, j.name)); err != nil {
			return fail(stderr, err)
		}
	}
	if err := writeAtomic(sums, []byte(content)); err != nil {
		return fail(stderr, err)
	}
	for _, n := range notes {
		fmt.Fprintf(stdout, "note: %s\n", n)
	}
	res, err := plugins.Verify(plugins.Options{Dir: dir, ChecksumFile: sums, Reserved: broker.BuiltinIDs(), Logger: logging.New(io.Discard, false)})
	if err != nil {
		for _, p := range splitErrors(err) {
			fmt.Fprintf(stderr, "secretless-broker: %s\n", p)
		}
		return fail(stderr, errors.New("plugin directory verification failed"))
	}
	for _, p := range res {
		fmt.Fprintf(stdout, "ok      %s  sha256:%s  %s %s\n", displayName(p.File), p.Digest, p.PackagePath, p.GoVersion)
	}
	fmt.Fprintf(stdout, "wrote %s (%d plugin(s)); start the broker with: secretless-broker -p %s -s %s\n", sums, len(res), shellJoin([]string{dir}), shellJoin([]string{sums}))
	return ExitOK
}

// mergeChecksums returns the new checksum file for dir: the plugins just
// built with their digests, and every other plugin already in dir, which
// must be listed in the existing file with its current digest (nothing
// unlisted or modified is ever blessed). Entries for files no longer in dir
// are dropped, with a note.
func mergeChecksums(dir, sumFile string, built map[string]string) (string, []string, error) {
	listed := map[string]string{}
	data, err := plugins.ReadFile(sumFile, plugins.MaxChecksumFileSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", nil, err
	default:
		entries, err := plugins.ParseChecksums(data)
		if err != nil {
			return "", nil, fmt.Errorf("checksum file %s: %w", sumFile, err)
		}
		for _, e := range entries {
			if prev, ok := listed[e.Base]; ok && prev != e.Digest {
				return "", nil, fmt.Errorf("checksum file %s lists %s twice with different digests; fix it by hand first", sumFile, e.Base)
			}
			listed[e.Base] = e.Digest
		}
	}
	final := map[string]string{}
	for name, d := range built {
		final[name] = d
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return "", nil, err
	}
	present := map[string]bool{}
	for _, de := range des {
		name := de.Name()
		present[name] = true
		if _, ok := built[name]; ok {
			continue
		}
		if !de.Type().IsRegular() || !strings.HasSuffix(name, ".so") || len(name) <= len(".so") {
			return "", nil, fmt.Errorf("plugin directory %s holds %q, which is not a plugin file; the broker refuses to start with it there: remove it", dir, name)
		}
		b, err := plugins.ReadFile(filepath.Join(dir, name), plugins.MaxPluginSize)
		if err != nil {
			return "", nil, err
		}
		sum := sha256.Sum256(b)
		digest := hex.EncodeToString(sum[:])
		want, ok := listed[name]
		switch {
		case !ok:
			return "", nil, fmt.Errorf("plugin directory %s holds %s, which %s does not list; remove it, or rebuild it with this command", dir, name, sumFile)
		case want != digest:
			return "", nil, fmt.Errorf("plugin %s in %s has sha256 %s but %s lists %s; refusing to bless a modified plugin: remove it or rebuild it with this command", name, dir, digest, sumFile, want)
		}
		final[name] = digest
	}
	var notes []string
	for name := range listed {
		if !present[name] && built[name] == "" {
			notes = append(notes, fmt.Sprintf("dropped %s from %s: it is no longer in %s", name, sumFile, dir))
		}
	}
	sort.Strings(notes)
	names := make([]string, 0, len(final))
	for n := range final {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s  %s\n", final[n], n)
	}
	return b.String(), notes, nil
}

// writeAtomic replaces file with data through a temporary file in the same
// directory.
func writeAtomic(file string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), file)
}
