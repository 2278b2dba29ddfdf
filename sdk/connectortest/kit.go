package connectortest

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/log"
)

// DefaultHandshakeTimeout is the deadline the broker sets on the client
// connection while a TCP connector's Connect runs.
const DefaultHandshakeTimeout = 30 * time.Second

// MinSecretLen is the shortest credential value the leak checks look for:
// shorter values match too much innocent text.
const MinSecretLen = connector.MinSecretLen

// PublicCredentials names the credentials whose values are addresses or
// settings rather than secrets. The broker logs them unredacted, and the
// kit does not report them when they show up in errors, logs or client
// bytes. Options.Public adds names to the list.
var PublicCredentials = connector.PublicCredentialNames

// Options says how to load a connector.
type Options struct {
	// Info is the plugin's PluginInfo() map. When it is not nil it is
	// checked as the broker checks it (see CheckPluginInfo) and a problem
	// is returned by LoadTCP or LoadHTTP.
	Info map[string]string
	// Config is the service's "config" block as the broker passes it:
	// YAML text, or nil when the service has none.
	Config []byte
	// HandshakeTimeout is the deadline set on the client connection while
	// a TCP Connect runs; zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Declared lists the credential names the service declares under
	// "credentials", and Literal the values written in the config file
	// itself (bare scalars or "from: literal"). When either is set and the
	// plugin implements connector.CredentialsValidator, LoadTCP and
	// LoadHTTP call its ValidateCredentials with the config block, the
	// names (Declared, then the other keys of Literal, sorted) and the
	// literal values, as the broker does at start-up.
	Declared []string
	Literal  Credentials
	// Public names further credentials that are not secret.
	Public []string
	// Quiet turns off debug logging (Logger().DebugEnabled() reports
	// false). By default debug logging is on, so that debug messages are
	// checked for secrets too.
	Quiet bool
}

func (o Options) handshakeTimeout() time.Duration {
	if o.HandshakeTimeout > 0 {
		return o.HandshakeTimeout
	}
	return DefaultHandshakeTimeout
}

func (o Options) isPublic(name string) bool {
	return slices.Contains(PublicCredentials, name) || slices.Contains(o.Public, name)
}

// Credentials are the credential values of one connection or request, by
// the names written under the service's "credentials" key. Each Connect
// gets fresh byte slices holding these values, which the kit zeroes when
// Connect returns.
type Credentials map[string]string

// values returns fresh copies of c as the broker hands them to Connect.
func (c Credentials) values() connector.CredentialValuesByID {
	out := make(connector.CredentialValuesByID, len(c))
	for k, v := range c {
		out[k] = []byte(v)
	}
	return out
}

// secrets returns the values the leak checks look for, by name.
func (c Credentials) secrets(o Options) map[string]string {
	out := map[string]string{}
	for k, v := range c {
		if len(v) >= MinSecretLen && !o.isPublic(k) {
			out[k] = v
		}
	}
	return out
}

// leaks names the credentials whose values occur in text, sorted.
func leaks(text []byte, secrets map[string]string) []string {
	var names []string
	for name, v := range secrets {
		if bytes.Contains(text, []byte(v)) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

var validID = regexp.MustCompile(`^[a-z0-9_:.-]+$`)

// CheckPluginInfo checks the map returned by a plugin's PluginInfo the way
// the broker does when it loads the plugin, and that its type is wantType
// (sdk.TypeTCPConnector or sdk.TypeHTTPConnector). The broker also refuses
// an id that a built-in connector or another plugin already uses; that
// check needs the broker ("secretless-broker plugins verify" does not run
// plugin code, the broker's start-up and "validate -p DIR -s FILE" do).
func CheckPluginInfo(info map[string]string, wantType string) error {
	var missing []string
	for _, k := range []string{sdk.KeyPluginAPIVersion, sdk.KeyType, sdk.KeyID, sdk.KeyDescription} {
		if _, ok := info[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s() is missing key(s) %s", sdk.SymbolPluginInfo, strings.Join(missing, ", "))
	}
	if v := info[sdk.KeyPluginAPIVersion]; !slices.Contains(sdk.SupportedPluginAPIVersions, v) {
		return fmt.Errorf("unsupported %s %q, the broker supports %s", sdk.KeyPluginAPIVersion, v, strings.Join(sdk.SupportedPluginAPIVersions, ", "))
	}
	if id := info[sdk.KeyID]; !validID.MatchString(id) {
		return fmt.Errorf("invalid %s %q, want ^[a-z0-9_:.-]+$", sdk.KeyID, id)
	}
	switch typ := info[sdk.KeyType]; typ {
	case sdk.TypeTCPConnector, sdk.TypeHTTPConnector:
		if typ != wantType {
			return fmt.Errorf("%s is %q, but the plugin is loaded as %q", sdk.KeyType, typ, wantType)
		}
	default:
		return fmt.Errorf("unknown %s %q, want %s or %s", sdk.KeyType, typ, sdk.TypeHTTPConnector, sdk.TypeTCPConnector)
	}
	return nil
}

// breach reports a contract violation.
func breach(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Errorf("connectortest: contract: "+format, args...)
}

// call runs f, turning a panic into an error.
func call(what string, f func()) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s panicked: %v", what, p)
		}
	}()
	f()
	return nil
}

// validate runs the plugin's ValidateConfig, if it has one, as the broker
// does at start-up.
func validate(t testing.TB, p any, config []byte) error {
	t.Helper()
	v, ok := p.(interface{ ValidateConfig([]byte) error })
	if !ok {
		return nil
	}
	var err error
	if perr := call("ValidateConfig", func() { err = v.ValidateConfig(config) }); perr != nil {
		breach(t, "%v; return an error for a bad config block instead", perr)
		return perr
	}
	if err != nil {
		return fmt.Errorf("config rejected: %w", err)
	}
	return nil
}

// validateCredentials runs the plugin's ValidateCredentials, if it has one
// and the options declare credentials.
func validateCredentials(t testing.TB, p any, o Options) error {
	t.Helper()
	v, ok := p.(connector.CredentialsValidator)
	if !ok || (o.Declared == nil && o.Literal == nil) {
		return nil
	}
	names := slices.Clone(o.Declared)
	var extra []string
	for k := range o.Literal {
		if !slices.Contains(names, k) {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	names = append(names, extra...)
	literal := o.Literal.values()
	defer literal.Zero()
	var err error
	if perr := call("ValidateCredentials", func() { err = v.ValidateCredentials(o.Config, names, literal) }); perr != nil {
		breach(t, "%v; return an error for missing or malformed credentials instead", perr)
		return perr
	}
	if err != nil {
		checkLeaks(t, "the error ValidateCredentials returned", []byte(err.Error()), o.Literal.secrets(o))
		return fmt.Errorf("credentials rejected: %w", err)
	}
	return nil
}

// Entry is one message a connector logged.
type Entry struct {
	Level   string // "debug", "info", "warn", "error" or "panic"
	Message string
}

// Logger is the log.Logger the kit hands to a connector. It records every
// message (see Entries) and writes it to the test log. Panic, Panicf and
// Panicln log at level "panic" and then panic, as the broker's logger does.
type Logger struct {
	t      testing.TB
	shared *logRecord
	prefix string
	debug  bool
}

type logRecord struct {
	mu      sync.Mutex
	entries []Entry
}

// NewLogger returns a Logger writing to t's log, with debug logging on.
func NewLogger(t testing.TB) *Logger {
	return &Logger{t: t, shared: &logRecord{}, debug: true}
}

// Entries returns a copy of everything logged so far, by this logger and
// by the loggers made from it with CopyWith.
func (l *Logger) Entries() []Entry {
	l.shared.mu.Lock()
	defer l.shared.mu.Unlock()
	return slices.Clone(l.shared.entries)
}

func (l *Logger) count() int {
	l.shared.mu.Lock()
	defer l.shared.mu.Unlock()
	return len(l.shared.entries)
}

// textSince returns the messages logged after the first n, one per line.
func (l *Logger) textSince(n int) []byte {
	l.shared.mu.Lock()
	defer l.shared.mu.Unlock()
	var b bytes.Buffer
	for _, e := range l.shared.entries[min(n, len(l.shared.entries)):] {
		b.WriteString(e.Message)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func (l *Logger) add(level, msg string) {
	if level == "debug" && !l.debug {
		return
	}
	l.shared.mu.Lock()
	l.shared.entries = append(l.shared.entries, Entry{Level: level, Message: msg})
	l.shared.mu.Unlock()
	if l.prefix != "" {
		msg = l.prefix + ": " + msg
	}
	l.t.Logf("connector %s: %s", level, msg)
}

func sprintln(args ...any) string { return strings.TrimSuffix(fmt.Sprintln(args...), "\n") }

// Debugf implements log.Logger.
func (l *Logger) Debugf(format string, args ...any) { l.add("debug", fmt.Sprintf(format, args...)) }

// Infof implements log.Logger.
func (l *Logger) Infof(format string, args ...any) { l.add("info", fmt.Sprintf(format, args...)) }

// Warnf implements log.Logger.
func (l *Logger) Warnf(format string, args ...any) { l.add("warn", fmt.Sprintf(format, args...)) }

// Errorf implements log.Logger.
func (l *Logger) Errorf(format string, args ...any) { l.add("error", fmt.Sprintf(format, args...)) }

// Panicf implements log.Logger: it logs, then panics.
func (l *Logger) Panicf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.add("panic", msg)
	panic(msg)
}

// Debug implements log.Logger.
func (l *Logger) Debug(args ...any) { l.add("debug", fmt.Sprint(args...)) }

// Info implements log.Logger.
func (l *Logger) Info(args ...any) { l.add("info", fmt.Sprint(args...)) }

// Warn implements log.Logger.
func (l *Logger) Warn(args ...any) { l.add("warn", fmt.Sprint(args...)) }

// Error implements log.Logger.
func (l *Logger) Error(args ...any) { l.add("error", fmt.Sprint(args...)) }

// Panic implements log.Logger: it logs, then panics.
func (l *Logger) Panic(args ...any) {
	msg := fmt.Sprint(args...)
	l.add("panic", msg)
	panic(msg)
}

// Debugln implements log.Logger.
func (l *Logger) Debugln(args ...any) { l.add("debug", sprintln(args...)) }

// Infoln implements log.Logger.
func (l *Logger) Infoln(args ...any) { l.add("info", sprintln(args...)) }

// Warnln implements log.Logger.
func (l *Logger) Warnln(args ...any) { l.add("warn", sprintln(args...)) }

// Errorln implements log.Logger.
func (l *Logger) Errorln(args ...any) { l.add("error", sprintln(args...)) }

// Panicln implements log.Logger: it logs, then panics.
func (l *Logger) Panicln(args ...any) {
	msg := sprintln(args...)
	l.add("panic", msg)
	panic(msg)
}

// DebugEnabled implements log.Logger.
func (l *Logger) DebugEnabled() bool { return l.debug }

// Prefix implements log.Logger.
func (l *Logger) Prefix() string { return l.prefix }

// CopyWith implements log.Logger. The copy records into the same Entries.
func (l *Logger) CopyWith(prefix string, isDebug bool) log.Logger {
	return &Logger{t: l.t, shared: l.shared, prefix: prefix, debug: isDebug}
}

var _ log.Logger = (*Logger)(nil)

// checkLeaks reports credential values found in what a connector produced
// during one Connect call.
func checkLeaks(t testing.TB, where string, text []byte, secrets map[string]string) {
	t.Helper()
	if names := leaks(text, secrets); len(names) > 0 {
		breach(t, "%s contains the value of credential(s) %s; never put a secret into errors, logs or client messages",
			where, strings.Join(names, ", "))
	}
}

// load makes the start-up checks LoadTCP and LoadHTTP share, in the
// broker's order: PluginInfo, the plugin value, ValidateConfig,
// ValidateCredentials, then NewConnector (which must neither panic nor
// return nil).
func load[C any](t testing.TB, p any, kind, symbol string, opts Options, newConnector func(connector.Resources) C) (C, *Logger, error) {
	t.Helper()
	var zero C
	if opts.Info != nil {
		if err := CheckPluginInfo(opts.Info, kind); err != nil {
			return zero, nil, fmt.Errorf("plugin info: %w", err)
		}
	}
	if isNil(p) {
		return zero, nil, fmt.Errorf("%s returned nil", symbol)
	}
	if err := validate(t, p, opts.Config); err != nil {
		return zero, nil, err
	}
	if err := validateCredentials(t, p, opts); err != nil {
		return zero, nil, err
	}
	logger := NewLogger(t)
	logger.debug = !opts.Quiet
	var c C
	if err := call("NewConnector", func() { c = newConnector(connector.NewResources(opts.Config, logger)) }); err != nil {
		breach(t, "%v; report configuration problems from ValidateConfig instead", err)
		return zero, nil, err
	}
	if isNil(c) {
		breach(t, "NewConnector returned nil")
		return zero, nil, errors.New("NewConnector returned nil")
	}
	return c, logger, nil
}
