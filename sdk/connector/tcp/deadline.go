package tcp

import (
	"net"
	"time"
)

// HandshakeDeadliner is implemented by the client connection the broker
// passes to Connect. HandshakeDeadline is when the broker gives up on the
// connection (the service's connectTimeout, counted from before the
// credentials were fetched): at that moment it closes the client, so a
// connector that wants to tell the client why it failed must have written
// its error by then. The broker also sets it as the connection's read and
// write deadline.
type HandshakeDeadliner interface {
	HandshakeDeadline() time.Time
}

// HandshakeDeadline returns the broker's handshake deadline of clientConn,
// and false when clientConn does not carry one (a connector called outside
// the broker, in a test for example).
func HandshakeDeadline(clientConn net.Conn) (time.Time, bool) {
	if d, ok := clientConn.(HandshakeDeadliner); ok {
		if t := d.HandshakeDeadline(); !t.IsZero() {
			return t, true
		}
	}
	return time.Time{}, false
}
