package relay

import "net"

// Unwrapper is implemented by a connection wrapper that can hand the relay
// the socket underneath it, when reading and writing that socket directly is
// equivalent to using the wrapper (nothing buffered, no transformation such
// as TLS). The relay then copies with system calls on the socket, and may
// splice, while still closing and half-closing through the wrapper.
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

// SessionEnder is implemented by a connection whose end of stream ends the
// whole session, as a PostgreSQL server's does: it never half-closes and
// reads on. Once the relay has read it to EOF and passed that on, it closes
// both connections instead of waiting for the other side to close too (a
// client that keeps its end open would otherwise hold the session, its
// slot and its descriptors).
type SessionEnder interface {
	EndsSessionAtEOF() bool
}

// EndsSessionAtEOF reports whether c's EOF ends its session (SessionEnder).
func EndsSessionAtEOF(c net.Conn) bool {
	e, ok := c.(SessionEnder)
	return ok && e.EndsSessionAtEOF()
}
