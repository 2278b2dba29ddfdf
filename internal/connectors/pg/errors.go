package pg

import (
	"errors"
	"fmt"
)

// Sentinel errors, one per failure kind. Every error Connect returns wraps
// exactly one of them, so callers (and tests) can classify failures with
// errors.Is without parsing text.
var (
	// ErrConfig: the service's config block or credentials are unusable.
	ErrConfig = errors.New("pg: invalid configuration")
	// ErrClientProtocol: the client sent something that is not a valid
	// PostgreSQL startup sequence.
	ErrClientProtocol = errors.New("pg: client protocol violation")
	// ErrClientTLS: the client-facing TLS handshake failed, or the client
	// asked for TLS the broker does not offer.
	ErrClientTLS = errors.New("pg: client tls")
	// ErrClientTLSRequired: the service requires clients to use TLS.
	ErrClientTLSRequired = errors.New("pg: client tls required")
	// ErrTargetUnreachable: the target server could not be reached, the
	// TLS session to it could not be established, or it closed the
	// connection during the startup.
	ErrTargetUnreachable = errors.New("pg: target unreachable")
	// ErrTargetNoTLS: the target server does not offer TLS, which the
	// service's sslmode requires.
	ErrTargetNoTLS = errors.New("pg: target server has no TLS")
	// ErrTargetProtocol: the target server broke the protocol.
	ErrTargetProtocol = errors.New("pg: target protocol violation")
	// ErrServerRejected: the target server sent an ErrorResponse during the
	// startup (wrong password, unknown database, too many connections ...).
	ErrServerRejected = errors.New("pg: server rejected the connection")
	// ErrUnsupportedAuth: the target server asked for an authentication
	// method the broker does not implement.
	ErrUnsupportedAuth = errors.New("pg: unsupported authentication method")
	// ErrServerAuth: the server's proof of identity in SCRAM was invalid.
	ErrServerAuth = errors.New("pg: server authentication failed")
)

// SQLSTATE codes used in the ErrorResponses the broker writes itself.
const (
	codeProtocolViolation     = "08P01"
	codeConnectionFailure     = "08006"
	codeUnableToConnect       = "08001"
	codeInvalidAuthSpec       = "28000"
	codeFeatureNotSupported   = "0A000"
	codeConfigFile            = "F0000" // config_file_error
	codeInvalidPassword       = "28P01"
	codeTooManyConnections    = "53300"
	codeInvalidCatalogName    = "3D000"
	severityFatal             = "FATAL"
	clientMessagePrefix       = "secretless: "
	unsupportedProtocolFormat = "unsupported frontend protocol %d.%d: server supports 3.0 to 3.2"
)

// connError is a failure the connector reports both to the client (as an
// ErrorResponse) and to the broker (as the returned error).
//
// msg and detail are sent to the client and must never contain a credential
// value; cause is only returned to the broker (it is logged) and must not
// contain one either.
type connError struct {
	kind   error  // one of the sentinel errors
	code   string // SQLSTATE sent to the client
	msg    string // client-visible message
	detail string // optional client-visible detail
	cause  error  // optional underlying error, logged only
	// raw, when set, is a complete ErrorResponse message from the server,
	// relayed to the client byte for byte instead of one built from msg.
	raw []byte
}

func (e *connError) Error() string {
	s := e.kind.Error() + ": " + e.msg
	if e.code != "" {
		s += " (SQLSTATE " + e.code + ")"
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// Unwrap lets errors.Is see both the kind and the cause.
func (e *connError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.kind, e.cause}
	}
	return []error{e.kind}
}

// newError builds a connError; cause may be nil.
func newError(kind error, code, msg string, cause error) *connError {
	return &connError{kind: kind, code: code, msg: msg, cause: cause}
}

// ServerError is the cause of an ErrServerRejected error: the fields of the
// ErrorResponse the server sent. Servers do not echo passwords, so it is
// safe to log.
type ServerError struct {
	Severity string
	Code     string
	Message  string
	Detail   string
}

func (e *ServerError) Error() string {
	s := fmt.Sprintf("server said %s %s: %s", e.Severity, e.Code, e.Message)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}
