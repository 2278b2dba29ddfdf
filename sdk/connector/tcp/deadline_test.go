package tcp

import (
	"net"
	"syscall"
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

func TestWithHandshakeDeadline(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	at := time.Now().Add(time.Minute)
	w := WithHandshakeDeadline(c, at)
	if d, ok := HandshakeDeadline(w); !ok || !d.Equal(at) {
		t.Errorf("HandshakeDeadline = %v, %v", d, ok)
	}
	if nc := w.(interface{ NetConn() net.Conn }).NetConn(); nc != c {
		t.Error("NetConn does not give the connection back")
	}
	if _, err := w.(syscall.Conn).SyscallConn(); err != nil {
		t.Errorf("SyscallConn of a TCP connection: %v", err)
	}
	if err := w.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Errorf("CloseWrite of a TCP connection: %v", err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	p := WithHandshakeDeadline(a, at)
	if _, err := p.(syscall.Conn).SyscallConn(); err == nil {
		t.Error("SyscallConn of a pipe succeeded")
	}
	if err := p.(interface{ CloseWrite() error }).CloseWrite(); err == nil {
		t.Error("CloseWrite of a pipe succeeded")
	}
}
