//go:build unix

package pg

import (
	"net"
	"syscall"
)

// hasPendingData reports whether bytes are already waiting on the socket,
// without consuming them or blocking. It is used right after an SSLRequest
// (client side) or an 'S' answer (server side): a well-behaved peer waits
// for the reply, so anything already there was sent before encryption
// started, possibly injected by a man in the middle (CVE-2021-23214,
// CVE-2021-23222), and the connection is refused. Connections that are not
// sockets report false.
func hasPendingData(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	var buf [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		n, _, _ = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	return n > 0
}
