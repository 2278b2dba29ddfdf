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
