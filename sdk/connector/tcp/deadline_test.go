package tcp

import (
	"net"
	"testing"
	"time"
)

type deadlineConn struct {
	net.Conn
	d time.Time
}

func (c deadlineConn) HandshakeDeadline() time.Time { return c.d }

func TestHandshakeDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	at := time.Now().Add(time.Minute)
	tests := []struct {
		name   string
		conn   net.Conn
		want   time.Time
		wantOK bool
	}{
		{name: "broker connection", conn: deadlineConn{a, at}, want: at, wantOK: true},
		{name: "zero deadline", conn: deadlineConn{a, time.Time{}}},
		{name: "plain connection", conn: a},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := HandshakeDeadline(tt.conn)
			if ok != tt.wantOK || !got.Equal(tt.want) {
				t.Fatalf("HandshakeDeadline = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
