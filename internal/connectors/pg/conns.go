package pg

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/relay"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

type closeWriter interface{ CloseWrite() error }

// closeWrite half-closes c where it can, else closes it: without
// half-close, closing is the only way to pass an EOF on.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// targetConn is the authenticated server connection handed to the relay.
// It first returns bytes the startup reader had already buffered, and runs
// onClose once (to forget the session's cancel key).
type targetConn struct {
	net.Conn
	pending []byte
	once    sync.Once
	onClose func()

	// The last bytes written, kept when Conn is TLS (see CloseWrite).
	tail  [len(terminateMsgArr)]byte
	tailN int
}

// Write writes to the server; over TLS it notes the last bytes written.
// (Without TLS the relay writes to the socket itself, see RelayConn.)
func (c *targetConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if _, ok := c.Conn.(*tls.Conn); ok {
		c.noteTail(p[:n])
	}
	return n, err
}

// noteTail keeps the last len(tail) bytes of everything written.
func (c *targetConn) noteTail(p []byte) {
	if len(p) >= len(c.tail) {
		c.tailN = copy(c.tail[:], p[len(p)-len(c.tail):])
		return
	}
	keep := min(c.tailN, len(c.tail)-len(p))
	copy(c.tail[:keep], c.tail[c.tailN-keep:c.tailN])
	c.tailN = keep + copy(c.tail[keep:], p)
}

// endedWithTerminate reports whether the last bytes written were a
// Terminate message (or bytes that look like one).
func (c *targetConn) endedWithTerminate() bool {
	return c.tailN == len(c.tail) && c.tail == terminateMsgArr
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

// EndsSessionAtEOF: when the server closes, the session is over (a
// PostgreSQL server never half-closes), so the relay closes the client too
// instead of waiting for it; after pg_terminate_backend, a server restart
// or idle_session_timeout the client's slot and descriptor are freed.
func (c *targetConn) EndsSessionAtEOF() bool { return true }

func (c *targetConn) Close() error {
	c.forget()
	return c.Conn.Close()
}

// forget runs onClose once.
func (c *targetConn) forget() {
	c.once.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
	})
}

// terminateMsg is the client's Terminate message.
var (
	terminateMsgArr = [...]byte{'X', 0, 0, 0, 4}
	terminateMsg    = terminateMsgArr[:]
)

// pooledConn is the server connection of a session on a service with
// serverPool. It follows message boundaries in both directions (without
// copying) so that it can give the connection back to the pool instead of
// closing it when the session ends cleanly: the client sends Terminate
// while the server is idle outside a transaction, with every query and
// Sync it sent answered by ReadyForQuery. That Terminate is not forwarded;
// instead the connection does what the server would do, end the session
// towards the client: an immediate read deadline ends the relay's
// server-to-client direction, reported to the relay as EOF, so the client
// sees the connection close. When the relay then closes the connection, it
// is reset with DISCARD ALL and kept. Anything else (a Terminate while a
// query is outstanding, an EOF without Terminate, an error, a replication
// stream, a malformed message) reaches the server as without a pool and
// closes the connection.
type pooledConn struct {
	*targetConn
	pool    *serverPool
	ic      *idleConn
	cancels *cancelRegistry
	cancel  *cancelTarget // nil when the server sent no key data

	mu          sync.Mutex
	up, down    frameScanner // client-to-server, server-to-client
	syncs, rfqs int64        // Query/Sync/FunctionCall sent, ReadyForQuery received
	status      byte         // of the last ReadyForQuery
	extended    bool         // extended-protocol messages sent since the last Sync
	terminated  bool         // the client sent Terminate; it was held back
	readEOF     bool         // Read has reported the end of the session
	unsafe      bool         // never reuse this connection
	closed      bool
}

// RelayConn keeps the relay on this wrapper, which must see every byte.
func (c *pooledConn) RelayConn() net.Conn { return nil }

func (c *pooledConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.terminated {
		c.mu.Unlock()
		return len(p), nil // nothing follows a Terminate
	}
	cut := -1
	c.up.scan(p, nil, func(ev frameEvent) bool {
		switch ev.typ {
		case 'X':
			start := ev.off - 4
			if start >= 0 && !c.unsafe && !c.extended && c.syncs == c.rfqs && c.status == 'I' && c.down.atBoundary() {
				cut = start
				return false
			}
			c.unsafe = true // forwarded: the server ends the session
		case 'S':
			c.syncs++
			c.extended = false
		case 'Q', 'F':
			c.syncs++
		case 'P', 'B', 'E', 'D', 'C', 'H':
			// Until a Sync the server may be skipping messages after an
			// error, or hold an unfinished pipeline.
			c.extended = true
		}
		return true
	})
	if c.up.bad {
		c.unsafe = true
	}
	if cut >= 0 {
		c.terminated = true
	}
	c.mu.Unlock()
	if cut < 0 {
		return c.targetConn.Write(p)
	}
	if cut > 0 {
		if _, err := c.targetConn.Write(p[:cut]); err != nil {
			return 0, err
		}
	}
	// End the server-to-client direction, as the server would.
	if err := c.Conn.SetReadDeadline(time.Now()); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *pooledConn) Read(p []byte) (int, error) {
	n, err := c.targetConn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > 0 {
		c.down.scan(p[:n], func(typ byte) bool { return typ == 'Z' }, func(ev frameEvent) bool {
			switch {
			case ev.typ == 'Z' && ev.body0 >= 0:
				c.rfqs++
				c.status = byte(ev.body0)
			case ev.typ == 'W' && ev.body0 < 0: // CopyBothResponse: replication
				c.unsafe = true
			}
			return true
		})
		if c.down.bad {
			c.unsafe = true
		}
	}
	if err != nil && c.terminated && isTimeout(err) {
		c.readEOF = true
		return n, io.EOF
	}
	return n, err
}

// CloseWrite passes the client's EOF on, except after a held Terminate.
func (c *pooledConn) CloseWrite() error {
	c.mu.Lock()
	held := c.terminated
	c.mu.Unlock()
	if held {
		return nil
	}
	return c.targetConn.CloseWrite()
}

// Close keeps the connection for the next client if the session ended
// cleanly, and closes it otherwise.
func (c *pooledConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	reuse := c.terminated && c.readEOF && !c.unsafe && c.down.atBoundary() && len(c.pending) == 0
	held := c.terminated
	c.mu.Unlock()
	c.forget() // after this no CancelRequest can be matched to the session
	if reuse && c.cancel != nil && c.cancels.wasUsed(c.cancel) {
		reuse = false
	}
	c.mu.Lock()
	if !reuse {
		c.pool.logger.Debugf("pg: closing the server connection: terminated %v, ended %v, unsafe %v, %d of %d answered, status %q",
			c.terminated, c.readEOF, c.unsafe, c.rfqs, c.syncs, c.status)
	}
	c.mu.Unlock()
	if !reuse {
		if held {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
			_, _ = c.Conn.Write(terminateMsg)
		}
		return c.Conn.Close()
	}
	c.pool.startReset(c.ic, c.ic.reset)
	return nil
}

// CloseWrite half-closes the server connection, so that the relay can pass
// a client's EOF on. Over TLS that is a close_notify alert and a FIN,
// except after a Terminate: then only the FIN goes. The server exits on the
// Terminate without reading further, and a close_notify left unread in its
// socket makes its close a reset, which discards the end of its answer
// still on its way to the broker (a client that sends a query and
// Terminate, half-closes and reads lost the rest of its rows). A plain FIN
// is not data, so the server closes cleanly, as with a direct client.
func (c *targetConn) CloseWrite() error {
	if tc, ok := c.Conn.(*tls.Conn); ok && c.endedWithTerminate() {
		if cw, ok := tc.NetConn().(closeWriter); ok {
			return cw.CloseWrite()
		}
	}
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close() // through targetConn, so the cancel key is forgotten
}

// switchConn is the transport under the client-facing tls.Conn. During the
// startup it reads from (an optional already-read prefix and then) the raw
// client socket and writes to it. When the startup is done, switchTo moves
// it onto one end of a socket pair (streamPair): the broker relays the raw
// socket to the pair's other end, and the connector relays the decrypted stream to
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
// CancelRequest has been forwarded): it reads as EOF and discards writes,
// and its EOF ends the session, so the broker closes the client's
// connection at once, as PostgreSQL does after a cancel request.
type finishedConn struct{ local, remote net.Addr }

func (finishedConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (finishedConn) Write(p []byte) (int, error)      { return len(p), nil }
func (finishedConn) Close() error                     { return nil }
func (finishedConn) CloseWrite() error                { return nil }
func (finishedConn) EndsSessionAtEOF() bool           { return true }
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
	_ net.Addr         = noteAddr("")
	_ net.Conn         = (*targetConn)(nil)
	_ closeWriter      = (*targetConn)(nil)
	_ relay.Unwrapper  = (*targetConn)(nil)
	_ net.Conn         = (*pooledConn)(nil)
	_ closeWriter      = (*pooledConn)(nil)
	_ relay.Unwrapper  = (*pooledConn)(nil)
	_ tcp.SessionEnder = (*targetConn)(nil)
	_ tcp.SessionEnder = finishedConn{}
	_ tcp.SessionEnder = (*pairEnd)(nil)
	_ tcp.SessionEnder = innerServer{}
	_ relay.Unwrapper  = innerServer{}
	_ closeWriter      = innerServer{}
	_ relay.Unwrapper  = (*pairEnd)(nil)
	_ closeWriter      = (*pairEnd)(nil)
	_ net.Conn         = (*switchConn)(nil)
	_ net.Conn         = finishedConn{}
	_ closeWriter      = finishedConn{}
)
