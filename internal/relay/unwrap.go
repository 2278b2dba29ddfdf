package relay

import (
	"net"

	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// Unwrapper is implemented by a connection wrapper that can hand the relay
// the socket underneath it, when reading, writing and half-closing that
// socket directly is equivalent to using the wrapper (nothing buffered, no
// transformation such as TLS). The relay then copies with system calls on
// the socket, and may splice, or takes the socket over into its event loop
// (which closes the socket's net.Conn at once, reads, writes and shuts it
// down itself). Either way the wrapper's Close is called when the relay
// ends. Its EndsSessionAtEOF, if any, is asked at the EOF, or by the event
// loop once, when it takes the socket over.
// RelayConn returns nil when the wrapper must be used as it is. Pipe calls
// it once, before any I/O on the connection.
type Unwrapper interface {
	RelayConn() net.Conn
}

// ioConn is the connection the relay reads from and writes to for c: the
// socket under an Unwrapper, or c itself.
func ioConn(c net.Conn) net.Conn {
	if u, ok := c.(Unwrapper); ok {
		if inner := u.RelayConn(); inner != nil {
			return inner
		}
	}
	return c
}

// EndsSessionAtEOF reports whether c's EOF ends its session
// (tcp.SessionEnder): once the relay has read c to EOF and passed that on,
// it closes both connections instead of waiting for the other side.
func EndsSessionAtEOF(c net.Conn) bool {
	e, ok := c.(tcp.SessionEnder)
	return ok && e.EndsSessionAtEOF()
}
