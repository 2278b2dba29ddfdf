package tcp

import (
	"errors"
	"net"
	"syscall"
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

// WithHandshakeDeadline returns c as the broker hands it to Connect and
// Refuse: a net.Conn that also reports deadline (HandshakeDeadliner),
// gives c back from NetConn, and passes on c's CloseWrite and, when c is a
// socket, its file descriptor through SyscallConn (to peek at pending
// bytes, for example). It does not set c's deadlines. Tests of a connector can use it to run Connect as the
// broker does.
func WithHandshakeDeadline(c net.Conn, deadline time.Time) net.Conn {
	return &handshakeConn{Conn: c, deadline: deadline}
}

type handshakeConn struct {
	net.Conn
	deadline time.Time
}

func (c *handshakeConn) HandshakeDeadline() time.Time { return c.deadline }

// NetConn returns the connection the broker accepted.
func (c *handshakeConn) NetConn() net.Conn { return c.Conn }

var (
	errNoSyscallConn = errors.New("the client connection is not a socket")
	errNoCloseWrite  = errors.New("the client connection cannot be half-closed")
)

// CloseWrite half-closes c, when c can be.
func (c *handshakeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoCloseWrite
}

func (c *handshakeConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errNoSyscallConn
}

var (
	_ HandshakeDeadliner = (*handshakeConn)(nil)
	_ syscall.Conn       = (*handshakeConn)(nil)
)
