// Package logging builds the broker's slog logger and adapts it to the SDK's
// printf-style log.Logger that connectors receive. Connector log lines are
// redacted with the secrets the service's connections hold at the moment
// (package redact).
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/secretless-broker/secretless-broker/internal/redact"
	sdklog "github.com/secretless-broker/secretless-broker/sdk/log"
)

// New returns the broker's logger writing text lines to w.
func New(w io.Writer, debug bool) *slog.Logger { return NewFormat(w, debug, "text") }

// NewFormat returns the broker's logger in format "text" or "json".
func NewFormat(w io.Writer, debug bool, format string) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Adapter implements the SDK logger on top of slog.
type Adapter struct {
	l      *slog.Logger
	prefix string
	copied bool // made by CopyWith: lines carry the prefix
	debug  bool
	live   *redact.Live
}

// ForService returns the SDK logger given to a service's connector. Its
// lines are redacted with the secrets live holds (nil: none).
func ForService(l *slog.Logger, service string, live *redact.Live) *Adapter {
	return &Adapter{
		l:      l.With("service", service),
		prefix: service,
		debug:  l.Enabled(context.Background(), slog.LevelDebug),
		live:   live,
	}
}

func (a *Adapter) log(level slog.Level, msg string) {
	if level == slog.LevelDebug && !a.debug {
		return
	}
	if a.copied {
		// The prefix is redacted line by line too: a connector may build it
		// from a credential, and which secrets are live changes.
		a.l.Log(context.Background(), level, a.live.String(msg), "prefix", a.live.String(a.prefix))
		return
	}
	a.l.Log(context.Background(), level, a.live.String(msg))
}

// Debugf implements sdklog.Logger.
func (a *Adapter) Debugf(f string, v ...any) { a.log(slog.LevelDebug, fmt.Sprintf(f, v...)) }

// Infof implements sdklog.Logger.
func (a *Adapter) Infof(f string, v ...any) { a.log(slog.LevelInfo, fmt.Sprintf(f, v...)) }

// Warnf implements sdklog.Logger.
func (a *Adapter) Warnf(f string, v ...any) { a.log(slog.LevelWarn, fmt.Sprintf(f, v...)) }

// Errorf implements sdklog.Logger.
func (a *Adapter) Errorf(f string, v ...any) { a.log(slog.LevelError, fmt.Sprintf(f, v...)) }

// Panicf implements sdklog.Logger.
func (a *Adapter) Panicf(f string, v ...any) {
	m := a.live.String(fmt.Sprintf(f, v...))
	a.log(slog.LevelError, m)
	panic(m)
}

// Debug implements sdklog.Logger.
func (a *Adapter) Debug(v ...any) { a.log(slog.LevelDebug, fmt.Sprint(v...)) }

// Info implements sdklog.Logger.
func (a *Adapter) Info(v ...any) { a.log(slog.LevelInfo, fmt.Sprint(v...)) }

// Warn implements sdklog.Logger.
func (a *Adapter) Warn(v ...any) { a.log(slog.LevelWarn, fmt.Sprint(v...)) }

// Error implements sdklog.Logger.
func (a *Adapter) Error(v ...any) { a.log(slog.LevelError, fmt.Sprint(v...)) }

// Panic implements sdklog.Logger.
func (a *Adapter) Panic(v ...any) {
	m := a.live.String(fmt.Sprint(v...))
	a.log(slog.LevelError, m)
	panic(m)
}

func sprintln(v ...any) string { s := fmt.Sprintln(v...); return s[:len(s)-1] }

// Debugln implements sdklog.Logger.
func (a *Adapter) Debugln(v ...any) { a.log(slog.LevelDebug, sprintln(v...)) }

// Infoln implements sdklog.Logger.
func (a *Adapter) Infoln(v ...any) { a.log(slog.LevelInfo, sprintln(v...)) }

// Warnln implements sdklog.Logger.
func (a *Adapter) Warnln(v ...any) { a.log(slog.LevelWarn, sprintln(v...)) }

// Errorln implements sdklog.Logger.
func (a *Adapter) Errorln(v ...any) { a.log(slog.LevelError, sprintln(v...)) }

// Panicln implements sdklog.Logger.
func (a *Adapter) Panicln(v ...any) {
	m := a.live.String(sprintln(v...))
	a.log(slog.LevelError, m)
	panic(m)
}

// DebugEnabled implements sdklog.Logger.
func (a *Adapter) DebugEnabled() bool { return a.debug }

// Prefix implements sdklog.Logger.
func (a *Adapter) Prefix() string { return a.prefix }

// CopyWith implements sdklog.Logger.
func (a *Adapter) CopyWith(prefix string, isDebug bool) sdklog.Logger {
	// Redacted now, while the credentials it may be built from are live,
	// and again on every line.
	return &Adapter{l: a.l, prefix: a.live.String(prefix), copied: true, debug: isDebug, live: a.live}
}

var _ sdklog.Logger = (*Adapter)(nil)
