package tcp

import "net"

// Refuser may be implemented by a Connector to tell a client, in its own
// protocol, why the broker will not serve it (for example PostgreSQL's
// ErrorResponse with SQLSTATE 53300 when the service's maxConnections is
// reached). The broker calls Refuse instead of Connect, with a deadline set
// on clientConn, and closes clientConn afterwards. reason is a short English
// sentence without secrets.
type Refuser interface {
	Refuse(clientConn net.Conn, reason string)
}
