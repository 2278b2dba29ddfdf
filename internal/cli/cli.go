// Package cli implements the secretless-broker command line: flag parsing,
// subcommands and exit codes. It holds no broker logic of its own.
//
// Exit codes: 0 success (including a clean shutdown after SIGINT/SIGTERM);
// 1 the broker could not start or a check failed (bad config, bad plugin,
// listener or health address unavailable); 2 bad command-line usage.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/secretless-broker/secretless-broker/internal/broker"
	"github.com/secretless-broker/secretless-broker/internal/config"
	"github.com/secretless-broker/secretless-broker/internal/logging"
	"github.com/secretless-broker/secretless-broker/internal/plugins"
	"github.com/secretless-broker/secretless-broker/internal/typo"
	"github.com/secretless-broker/secretless-broker/sdk"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=v1.2.3".
var Version = "dev"

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// DefaultPluginDir is where plugins are looked for when -p is not given.
const DefaultPluginDir = "/usr/local/lib/secretless"

const usage = `secretless-broker: connect applications to databases and services without giving them secrets.

Usage:
  secretless-broker [-f FILE] [-p DIR] [-s FILE] [-debug] [-health-addr ADDR]
      run the broker
  secretless-broker validate [-f FILE] [-p DIR -s FILE] [-health-addr ADDR]
      check a config file (and, with -p/-s, that plugin connectors exist), then exit
  secretless-broker plugins sum DIR
      print sha256sum-format lines for the plugin files in DIR
  secretless-broker plugins verify [-p DIR] -s FILE
      run every start-up check on the plugins that does not execute plugin code
  secretless-broker plugins env [-json]
      print what a plugin build must match to load into this broker, and how to build one
  secretless-broker plugins check FILE.so...
      say whether built plugins would load into this broker and, if not, what to change
  secretless-broker plugins build -o DIR [-s FILE] [-go GO] PKGDIR...
      build plugins with this broker's flags, check them, and write or update the checksum file
  secretless-broker health [-health-addr ADDR] [PATH]
      ask a running broker's health server for PATH (default /ready); exit 0 on 200
  secretless-broker version
      print the broker, Go and plugin API versions

Flags (one or two dashes):
  -f FILE             config file (default: ./secretless.yml, then ~/.secretless.yml,
                      then /etc/secretless.yml)
  -p DIR              plugin directory (default /usr/local/lib/secretless)
  -s FILE             sha256sum-format checksum file; every .so in DIR must be listed
                      with its digest, and nothing else may be in DIR. Without -s,
                      plugins load unverified (a warning is logged).
  -debug              debug logging
  -health-addr ADDR   health server address serving /live and /ready
                      (default :5335; "" disables it)
  -shutdown-timeout D how long open connections may continue after SIGINT/SIGTERM
                      (default 30s)
  -watch              reload when the config file changes (also on SIGHUP, SIGUSR1)
  -log-format F       text (default) or json
  -profile ADDR       serve Go pprof on a loopback address such as 127.0.0.1:6060
  -version            same as "version"

Plugins:
  go build -buildmode=plugin -o=/path/to/plugins/my-plugin.so /path/to/my/plugin/files/
  sha256sum /path/to/plugins/* > PLUGINS_SHA256SUM.txt
  secretless-broker -p /path/to/plugins/ -s PLUGINS_SHA256SUM.txt
Build plugins with the same Go version, flags and module versions as the broker.
An unexpected, missing, modified, duplicated or incompatible plugin stops the broker
before any plugin code runs and before any listener opens.

Exit status: 0 success or clean shutdown; 1 could not start or check failed; 2 usage error.
`

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			if len(args) > 1 {
				return usageErr(stderr, "version: unexpected argument %q", args[1])
			}
			return printVersion(stdout)
		case "validate":
			return validate(args[1:], stdout, stderr)
		case "plugins":
			return pluginsCmd(args[1:], stdout, stderr)
		case "health":
			return healthCmd(args[1:], stdout, stderr)
		case "help", "-h", "-help", "--help":
			// Asked-for help is output, not an error: stdout, exit 0.
			fmt.Fprint(stdout, usage)
			return ExitOK
		}
	}
	return run(args, stdout, stderr)
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	return fs
}

// durationFlag is a duration flag whose error says what a duration looks
// like.
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration with a unit, such as 30s or 2m")
	}
	*f.d = d
	return nil
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "secretless-broker: %v\n", err)
	return ExitFailure
}

func usageErr(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "secretless-broker: "+format+"\nRun \"secretless-broker -help\" for usage.\n", args...)
	return ExitUsage
}

func printVersion(w io.Writer) int {
	fmt.Fprintf(w, "secretless-broker %s\ngo %s %s/%s\nplugin API %s\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH, sdk.PluginAPIVersion)
	return ExitOK
}

func configFile(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	return config.Find()
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("secretless-broker", stderr)
	cfgFile := fs.String("f", "", "config file")
	pluginDir := fs.String("p", DefaultPluginDir, "plugin directory")
	sumFile := fs.String("s", "", "plugin checksum file")
	debug := fs.Bool("debug", false, "debug logging")
	showVersion := fs.Bool("version", false, "print version")
	healthAddr := fs.String("health-addr", ":5335", "health server address")
	grace := new(time.Duration)
	*grace = broker.DefaultShutdownTimeout
	fs.Var(durationFlag{grace}, "shutdown-timeout", "shutdown grace period")
	watch := fs.Bool("watch", false, "reload when the config file changes")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	profile := fs.String("profile", "", "serve pprof on this loopback address")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if *showVersion {
		return printVersion(stdout)
	}
	if code := emptyFlag(fs, stderr, "s", "f", "p"); code != ExitOK {
		return code
	}
	if fs.NArg() > 0 {
		if meant := typo.Closest(fs.Arg(0), []string{"validate", "plugins", "health", "version", "help"}, nil); meant != "" {
			return usageErr(stderr, "unexpected argument %q; did you mean the %s command?", fs.Arg(0), meant)
		}
		return usageErr(stderr, "unexpected argument %q", fs.Arg(0))
	}
	if *grace <= 0 {
		return usageErr(stderr, "-shutdown-timeout must be positive, not %v (1ms closes open connections at once)", *grace)
	}
	if *logFormat != "text" && *logFormat != "json" {
		return usageErr(stderr, "-log-format must be text or json, not %q", *logFormat)
	}
	if msg := checkHealthAddr(*healthAddr); msg != "" {
		return usageErr(stderr, "%s", msg)
	}
	file, err := configFile(*cfgFile)
	if err != nil {
		return fail(stderr, err)
	}
	log := logging.NewFormat(stderr, *debug, *logFormat)
	// The standard library's own messages (net/http's client, for one) go
	// through the same log, in its format, with peer data removed.
	logging.CaptureStdlib(log, slog.LevelWarn)
	log.Debug("starting secretless-broker", "version", Version, "go", runtime.Version(), "config", file)
	// Signals are taken over before anything else: a SIGTERM during
	// start-up ends the broker cleanly once it has started, and a SIGHUP
	// (a reload) is not the default "terminate".
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(hup)
	var prof *profileServer
	if *profile != "" {
		// Checked and bound before any listener opens; served once
		// start-up succeeded.
		if prof, err = listenProfile(*profile); err != nil {
			return fail(stderr, err)
		}
		defer prof.close()
	}
	b, err := prepareInterruptible(ctx, broker.Options{
		ConfigFile: file, PluginDir: *pluginDir, ChecksumFile: *sumFile,
		HealthAddr: *healthAddr, ShutdownTimeout: *grace, Logger: log,
	})
	if err != nil {
		return fail(stderr, err)
	}
	if err := b.Start(); err != nil {
		return fail(stderr, err)
	}
	if prof != nil {
		prof.serve(log)
	}
	if a := b.HealthAddr(); a != nil {
		log.Info("health server listening", "address", a.String())
	}
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-hup:
				log.Info("reload requested", "signal", sig.String())
				poke(reload)
			}
		}
	}()
	if *watch {
		go watchFile(ctx, file, time.Second, func() {
			log.Info("config file changed; reloading", "config", file)
			poke(reload)
		})
	}
	if err := b.Serve(ctx, reload); err != nil {
		return fail(stderr, err)
	}
	return ExitOK
}

// prepare is broker.Prepare (a variable for tests).
var prepare = broker.Prepare

// startupAbandon is how long a start-up interrupted by SIGTERM or SIGINT
// may still take to finish (it then starts and shuts down at once, as
// before) before the broker gives up on it and exits.
const startupAbandon = 2 * time.Second

// prepareInterruptible runs prepare, but returns an error startupAbandon
// after ctx is done if prepare has not returned by then: nothing has
// opened a listener yet, so exiting is safe, and a start-up stuck on
// something (a plugin's init, a file system) cannot hold off a SIGTERM.
func prepareInterruptible(ctx context.Context, opts broker.Options) (*broker.Broker, error) {
	type result struct {
		b   *broker.Broker
		err error
	}
	done := make(chan result, 1)
	run := prepare
	go func() {
		b, err := run(opts)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-ctx.Done():
	}
	select {
	case r := <-done:
		return r.b, r.err
	case <-time.After(startupAbandon):
		return nil, fmt.Errorf("start-up interrupted by a signal: it had not finished %s later (loading plugins or reading files?)", startupAbandon)
	}
}

// validateLogger is the plugin loader's logger for validate: its warnings
// (plugins loaded without a checksum file) reach stderr, its reports of
// each plugin do not.
// checkHealthAddr returns what is wrong with a -health-addr value, "" when
// nothing is: HOST:PORT or :PORT with a port number (or service name) in
// range, or "" (no health server). Start-up and validate both use it.
func checkHealthAddr(a string) string {
	if a == "" {
		return ""
	}
	const want = "want HOST:PORT or :PORT%s, or \"\" to turn the health server off"
	_, port, err := net.SplitHostPort(a)
	if err != nil || port == "" {
		hint := ""
		if _, err := strconv.Atoi(a); err == nil {
			hint = fmt.Sprintf(" (:%s for port %s on every address)", a, a)
		}
		return fmt.Sprintf("-health-addr %q: "+want, a, hint)
	}
	if n, err := strconv.Atoi(port); err == nil {
		if n < 0 || n > 65535 {
			return fmt.Sprintf("-health-addr %q: port %d is out of range (0-65535)", a, n)
		}
		return ""
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Sprintf("-health-addr %q: %q is neither a port number nor a known service name", a, port)
	}
	return ""
}

func validateLogger(stderr io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func validate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate", stderr)
	cfgFile := fs.String("f", "", "config file")
	pluginDir := fs.String("p", "", "plugin directory")
	sumFile := fs.String("s", "", "plugin checksum file")
	healthAddr := fs.String("health-addr", ":5335", "the health server address the broker will use (services may not listen there)")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if code := emptyFlag(fs, stderr, "s", "f", "p"); code != ExitOK {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, "validate: unexpected argument %q (name the config file with -f %s)", fs.Arg(0), fs.Arg(0))
	}
	if msg := checkHealthAddr(*healthAddr); msg != "" {
		return usageErr(stderr, "validate: %s", msg)
	}
	file, err := configFile(*cfgFile)
	if err != nil {
		return fail(stderr, err)
	}
	cfg, cfgErr := broker.LoadConfig(file, nil)
	if cfgErr != nil && !config.CanCheckLater(cfgErr) {
		return fail(stderr, cfgErr)
	}
	var loaded []plugins.Plugin
	checkPlugins := *pluginDir != "" || *sumFile != ""
	if checkPlugins {
		dir := *pluginDir
		if dir == "" {
			dir = DefaultPluginDir
		}
		if loaded, err = plugins.Load(plugins.Options{Dir: dir, ChecksumFile: *sumFile, Reserved: broker.BuiltinIDs(), Logger: validateLogger(stderr)}); err != nil {
			return fail(stderr, errors.Join(cfgErr, err))
		}
	}
	reg, err := broker.NewRegistry(loaded)
	if err != nil {
		return fail(stderr, errors.Join(cfgErr, err))
	}
	if cfgErr != nil {
		// Report the problems of the other services' connectors too.
		return fail(stderr, config.WithLaterProblems(cfgErr, func(c *config.Config) error {
			return broker.CheckConnectors(c, reg, nil, !checkPlugins)
		}))
	}
	if err := broker.CheckConnectors(cfg, reg, nil, !checkPlugins); err != nil {
		return fail(stderr, err)
	}
	if err := broker.CheckOwnAddresses(cfg, *healthAddr); err != nil {
		return fail(stderr, err)
	}
	for _, w := range broker.Warnings(cfg, reg) {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if !checkPlugins {
		// Without plugins, a connector that is not built in cannot be
		// checked; one close to a built-in id may be a typo of it, or a
		// plugin's own id ("pgx").
		var unchecked []string
		for _, s := range cfg.Services {
			if _, ok := reg.Lookup(s.Connector); !ok {
				meant := ""
				if m := broker.SuggestConnector(reg, s.Connector); m != "" {
					meant = fmt.Sprintf("; unless a plugin has this id, you meant %q", m)
				}
				unchecked = append(unchecked, fmt.Sprintf("%s (service %s%s)", s.Connector, s.Name, meant))
			}
		}
		if len(unchecked) > 0 {
			fmt.Fprintf(stderr, "note: not built in, so not checked (pass -p DIR -s FILE to check plugin connectors): %s\n", strings.Join(unchecked, ", "))
		}
	}
	fmt.Fprintf(stdout, "%s: ok (%d services)\n", file, len(cfg.Services))
	return ExitOK
}

func pluginsCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageErr(stderr, "plugins: want \"plugins sum DIR\", \"plugins verify -p DIR -s FILE\", \"plugins env\", \"plugins check FILE.so\" or \"plugins build -o DIR PKGDIR\"")
	}
	switch args[0] {
	case "env":
		return pluginsEnv(args[1:], stdout, stderr)
	case "check":
		return pluginsCheck(args[1:], stdout, stderr)
	case "build":
		return pluginsBuild(args[1:], stdout, stderr)
	case "sum":
		if len(args) != 2 {
			return usageErr(stderr, "plugins sum: want exactly one directory")
		}
		out, err := plugins.Sum(args[1])
		if err != nil {
			return fail(stderr, err)
		}
		fmt.Fprint(stdout, out)
		return ExitOK
	case "verify":
		fs := newFlagSet("plugins verify", stderr)
		dir := fs.String("p", DefaultPluginDir, "plugin directory")
		sumFile := fs.String("s", "", "plugin checksum file")
		if err := fs.Parse(args[1:]); err != nil {
			return ExitUsage
		}
		if *sumFile == "" {
			return usageErr(stderr, "plugins verify: -s FILE is required")
		}
		if fs.NArg() > 0 {
			return usageErr(stderr, "plugins verify: unexpected argument %q", fs.Arg(0))
		}
		res, err := plugins.Verify(plugins.Options{Dir: *dir, ChecksumFile: *sumFile, Reserved: broker.BuiltinIDs(),
			Logger: logging.New(io.Discard, false)})
		problems := splitErrors(err)
		used := make([]bool, len(problems))
		for _, p := range res {
			var mine []string
			for i, e := range problems {
				if strings.Contains(e, strconv.Quote(p.File)) {
					mine = append(mine, e)
					used[i] = true
				}
			}
			if len(mine) == 0 {
				fmt.Fprintf(stdout, "ok      %s  sha256:%s  %s %s\n", displayName(p.File), p.Digest, p.PackagePath, p.GoVersion)
				continue
			}
			for _, e := range mine {
				fmt.Fprintf(stdout, "FAILED  %s: %s\n", displayName(p.File), e)
			}
		}
		for i, e := range problems {
			if !used[i] {
				fmt.Fprintf(stdout, "FAILED  %s\n", e)
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "secretless-broker: plugin verification failed (%d problem(s))\n", len(problems))
			return ExitFailure
		}
		fmt.Fprintf(stdout, "%d plugin(s) verified\n", len(res))
		if len(res) > 0 {
			fmt.Fprintln(stderr, "note: what needs plugin code to run (PluginInfo, ids clashing, the connectors' own checks) is not checked here: secretless-broker validate -f FILE -p DIR -s FILE checks it")
		}
		return ExitOK
	}
	return usageErr(stderr, "plugins: unknown subcommand %q", args[0])
}

// splitErrors returns one message per problem of an errors.Join result
// (whose text is the problems' texts joined by newlines).
func splitErrors(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

// emptyFlag refuses flags given explicitly with an empty value, such as
// -s "$SUMS" with SUMS unset: silently running without verification (or
// without a config) would be the opposite of what was asked.
func emptyFlag(fs *flag.FlagSet, stderr io.Writer, names ...string) int {
	code := ExitOK
	fs.Visit(func(f *flag.Flag) {
		for _, n := range names {
			if f.Name == n && f.Value.String() == "" {
				code = usageErr(stderr, "-%s was given an empty value (an unset variable?); omit the flag or give a path", n)
			}
		}
	})
	return code
}

// displayName is a file name as a line of output shows it: quoted when it
// holds a control character (a newline in a name could forge a line).
func displayName(name string) string {
	for _, r := range name {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return strconv.Quote(name)
		}
	}
	return name
}
