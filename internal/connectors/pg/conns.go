package pg

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/relay"
)

type closeWriter interface{ CloseWrite() error }

// targetConn is the authenticated server connection handed to the relay.
// It first returns bytes the startup reader had already buffered, and runs
// onClose once (to forget the session's cancel key).
type targetConn struct {
	net.Conn
	pending []byte
	once    sync.Once
	onClose func()
}

func (c *targetConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// RelayConn lets the broker's relay copy with system calls on the server
// socket (and splice) once nothing is left in pending; a TLS session is
// never unwrapped.
func (c *targetConn) RelayConn() net.Conn {
	if len(c.pending) > 0 {
		return nil
	}
	switch c.Conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		return c.Conn
	}
	return nil
}

func (c *targetConn) Close() error {
	c.once.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
	})
	return c.Conn.Close()
}

// CloseWrite half-closes the server connection, so that the relay can pass
// a client's EOF on.
func (c *targetConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// switchConn is the transport under the client-facing tls.Conn. During the
// startup it reads from (an optional already-read prefix and then) the raw
// client socket and writes to it. When the startup is done, switchTo moves
// it onto one end of an in-memory pipe: the broker relays the raw socket to
// the pipe's other end, and the connector relays the decrypted stream to
// the server. This is how client-side TLS works while the broker only ever
// relays clientConn to the returned connection.
type switchConn struct {
	net.Conn        // current transport
	prefix   []byte // bytes read from the raw socket before TLS started
}

func (c *switchConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// switchTo replaces the transport. It must only be called while the TLS
// connection above is idle (between the startup and the relay).
func (c *switchConn) switchTo(conn net.Conn) { c.Conn = conn }

// finishedConn is returned for a client connection that needs no relay (a
// CancelRequest has been forwarded): it reads as EOF and discards writes, so
// the broker's relay ends as soon as the client closes.
type finishedConn struct{ local, remote net.Addr }

func (finishedConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (finishedConn) Write(p []byte) (int, error)      { return len(p), nil }
func (finishedConn) Close() error                     { return nil }
func (finishedConn) CloseWrite() error                { return nil }
func (c finishedConn) LocalAddr() net.Addr            { return c.local }
func (c finishedConn) RemoteAddr() net.Addr           { return c.remote }
func (finishedConn) SetDeadline(time.Time) error      { return nil }
func (finishedConn) SetReadDeadline(time.Time) error  { return nil }
func (finishedConn) SetWriteDeadline(time.Time) error { return nil }

// noteAddr is the RemoteAddr of a finishedConn: what the broker logs as
// the target of a connection that had none.
type noteAddr string

func (noteAddr) Network() string  { return "pg" }
func (a noteAddr) String() string { return string(a) }

var (
	_ net.Addr        = noteAddr("")
	_ net.Conn        = (*targetConn)(nil)
	_ closeWriter     = (*targetConn)(nil)
	_ relay.Unwrapper = (*targetConn)(nil)
	_ net.Conn        = (*switchConn)(nil)
	_ net.Conn        = finishedConn{}
	_ closeWriter     = finishedConn{}
)
