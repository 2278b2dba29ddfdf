//go:build unix

package pg

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// streamPair returns the two ends of a connected unix stream socket pair.
// Unlike net.Pipe, each end can be half-closed (CloseWrite), so a client
// that shuts down its write side still gets the server's answer, and the
// relay reads and writes them with its raw socket I/O.
func streamPair() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	a, err := fileConn(fds[0])
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, err
	}
	b, err := fileConn(fds[1])
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// fileConn makes a net.Conn of fd, which it takes over.
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "pg-tls-pipe")
	defer f.Close() // net.FileConn works on a duplicate
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	return c, nil
}
