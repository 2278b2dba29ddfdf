package tcp

import "net"

// RefuseReason says why the broker will not serve a client. Its text is a
// short English sentence without secrets, fit to show to the client.
type RefuseReason string

// Reasons passed to Refuser.Refuse.
const (
	// RefuseTooManyConnections: the service's maxConnections is reached.
	RefuseTooManyConnections RefuseReason = "too many connections for this service"
	// RefuseCredentialsUnavailable: a credential provider failed, so the
	// broker cannot log in to the target for this connection.
	RefuseCredentialsUnavailable RefuseReason = "the broker could not fetch the credentials for this service"
)

// Refuser may be implemented by a Connector to tell a client, in its own
// protocol, why the broker will not serve it (PostgreSQL, for example, sends
// an ErrorResponse with SQLSTATE 53300 for RefuseTooManyConnections). The
// broker calls Refuse instead of Connect, with a deadline set on clientConn
// (also reported by HandshakeDeadline), and closes clientConn afterwards.
type Refuser interface {
	Refuse(clientConn net.Conn, reason RefuseReason)
}
