package logging

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"regexp"
	"time"
)

// quoted matches a Go double-quoted string (what %q writes): the standard
// library quotes bytes it got from a peer that way, such as "Unsolicited
// response received on idle HTTP channel starting with %q" from
// net/http, or a malformed header line in an error.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// strippedMark replaces what a peer sent, in a standard-library message.
const strippedMark = `"[peer data not logged]"`

// StripQuoted removes every quoted string from a standard-library message:
// a target may send back the credential the broker injected (echoed in a
// body, a stray response, a malformed header), and the library would quote
// it in its message, with no request at hand to redact it against.
func StripQuoted(msg string) string {
	return quoted.ReplaceAllLiteralString(msg, strippedMark)
}

// stdWriter turns lines written by a *log.Logger into slog records.
type stdWriter struct {
	h     slog.Handler
	level slog.Level
}

func (w stdWriter) Write(p []byte) (int, error) {
	ctx := context.Background()
	if w.h.Enabled(ctx, w.level) {
		msg := StripQuoted(string(bytes.TrimRight(p, "\n")))
		_ = w.h.Handle(ctx, slog.NewRecord(time.Now(), w.level, msg, 0))
	}
	return len(p), nil
}

// StdLogger returns a *log.Logger (for http.Server.ErrorLog and
// httputil.ReverseProxy.ErrorLog) that writes to h at level, with quoted
// peer data removed (StripQuoted).
func StdLogger(h slog.Handler, level slog.Level) *log.Logger {
	return log.New(stdWriter{h: h, level: level}, "", 0)
}

// CaptureStdlib sends the standard library's global logger (used, for
// example, by net/http's client for an unsolicited response) through l at
// level, with quoted peer data removed, instead of raw to stderr.
func CaptureStdlib(l *slog.Logger, level slog.Level) {
	log.SetFlags(0)
	log.SetPrefix("")
	log.SetOutput(stdWriter{h: l.Handler(), level: level})
}
