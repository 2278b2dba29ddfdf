package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/relay"
)

type enderConn struct {
	net.Conn
	ends bool
}

func (c enderConn) EndsSessionAtEOF() bool { return c.ends }

// TestActivityConnPassesSessionEnder: the idleTimeout wrapper keeps what
// the wrapped connection says about its EOF ending the session.
func TestActivityConnPassesSessionEnder(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	it := newIdleTimer(time.Hour, a, b)
	defer it.stop()
	tests := []struct {
		name string
		conn net.Conn
		want bool
	}{
		{"plain connection", a, false},
		{"ends the session", enderConn{Conn: a, ends: true}, true},
		{"says it does not", enderConn{Conn: a, ends: false}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := relay.EndsSessionAtEOF(it.wrap(tc.conn)); got != tc.want {
				t.Errorf("EndsSessionAtEOF through the wrapper = %v, want %v", got, tc.want)
			}
		})
	}
}
