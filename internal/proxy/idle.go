package proxy

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/relay"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// idleTimer closes both legs of a session once no bytes have moved in
// either direction for the timeout. Reads only record activity (an atomic
// store), so the relay's hot path takes no lock and arms no timer per read.
type idleTimer struct {
	timeout time.Duration
	last    atomic.Int64 // unix nanoseconds of the last activity
	t       *time.Timer
	conns   [2]net.Conn
	fired   atomic.Bool // the timeout closed the session
}

func newIdleTimer(timeout time.Duration, a, b net.Conn) *idleTimer {
	it := &idleTimer{timeout: timeout, conns: [2]net.Conn{a, b}}
	it.last.Store(time.Now().UnixNano())
	it.t = time.AfterFunc(timeout, it.check)
	return it
}

func (it *idleTimer) check() {
	idle := time.Since(time.Unix(0, it.last.Load()))
	if idle >= it.timeout {
		it.fired.Store(true)
		for _, c := range it.conns {
			_ = relay.Close(c)
		}
		return
	}
	it.t.Reset(it.timeout - idle)
}

func (it *idleTimer) stop() { it.t.Stop() }

func (it *idleTimer) wrap(c net.Conn) net.Conn { return &activityConn{Conn: c, it: it} }

type activityConn struct {
	net.Conn
	it *idleTimer
}

func (c *activityConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.it.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// CloseWrite passes half-close through the wrapper.
func (c *activityConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// EndsSessionAtEOF passes tcp.SessionEnder through the wrapper.
func (c *activityConn) EndsSessionAtEOF() bool { return relay.EndsSessionAtEOF(c.Conn) }

var (
	_ net.Conn         = (*activityConn)(nil)
	_ tcp.SessionEnder = (*activityConn)(nil)
)
