// Package log defines the logger the broker hands to every connector through
// connector.Resources. Its printf-style methods follow the logger of the
// CyberArk Secretless Broker plugin SDK, so plugins written for it keep
// compiling after their import paths change.
//
// Never pass credential values to a logger: the broker's implementation
// cannot tell a secret from any other string.
package log

// Logger is a leveled logger scoped to one service. Messages are prefixed
// with the service name by the broker.
type Logger interface {
	// Debugf logs at debug level; it is dropped unless debug logging is on.
	Debugf(format string, args ...any)
	// Infof logs at info level.
	Infof(format string, args ...any)
	// Warnf logs at warning level.
	Warnf(format string, args ...any)
	// Errorf logs at error level.
	Errorf(format string, args ...any)
	// Panicf logs at error level, then panics with the formatted message.
	// The broker recovers the panic and closes only the current connection.
	Panicf(format string, args ...any)

	// Debug logs its arguments, formatted as by fmt.Sprint, at debug level.
	Debug(args ...any)
	// Info logs its arguments at info level.
	Info(args ...any)
	// Warn logs its arguments at warning level.
	Warn(args ...any)
	// Error logs its arguments at error level.
	Error(args ...any)
	// Panic logs its arguments at error level, then panics.
	Panic(args ...any)

	// Debugln logs its arguments, formatted as by fmt.Sprintln, at debug level.
	Debugln(args ...any)
	// Infoln logs at info level.
	Infoln(args ...any)
	// Warnln logs at warning level.
	Warnln(args ...any)
	// Errorln logs at error level.
	Errorln(args ...any)
	// Panicln logs at error level, then panics.
	Panicln(args ...any)

	// DebugEnabled reports whether debug messages are emitted.
	DebugEnabled() bool
	// Prefix returns the prefix added to each message (usually the service name).
	Prefix() string
	// CopyWith returns a logger with another prefix and debug setting.
	CopyWith(prefix string, isDebug bool) Logger
}
