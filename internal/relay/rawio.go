//go:build linux

package relay

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// sockIO reads and writes a stream socket through its syscall.RawConn with
// raw system calls: recvfrom and sendto with MSG_DONTWAIT, which never
// block whatever the socket's O_NONBLOCK flag says (TCPConn.File().Fd()
// clears it for every dup of the socket, at any time). When they would
// block they return EAGAIN and the wait goes to the Go netpoller, as for
// any net.Conn: RawConn's Read and Write wait for readiness, and closing
// the connection ends the wait.
//
// What this skips is the runtime's bookkeeping around a system call that
// might block. With every P idle between small messages, each such call
// woke the runtime's monitor thread: a futex call and two context switches
// per message. On the 2-core VM this cut the broker's CPU per pgbench
// select-only transaction from about 41 to 28 us at 8 clients, and its
// context switches at 1 client from 5 to 2 per transaction (as many as
// pgbouncer's).
//
// At most one Read and one Write may run at a time (the relay's two
// directions), as each keeps its state in the sockIO.
type sockIO struct {
	rc            syscall.RawConn
	network       string
	local, remote net.Addr

	// The relay reads a socket on one goroutine and writes it on another,
	// so each side has its own state. The functions handed to RawConn are
	// bound once: a closure per call cost three allocations per message.
	rd struct {
		p     []byte
		n     uintptr
		errno syscall.Errno
		fn    func(fd uintptr) bool
	}
	wr struct {
		p     []byte
		off   int
		errno syscall.Errno
		fn    func(fd uintptr) bool
	}
}

// newSockIO returns raw I/O for a TCP or unix stream socket, nil for any
// other connection.
func newSockIO(c net.Conn) *sockIO {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil
	}
	s := &sockIO{rc: rc, local: c.LocalAddr(), remote: c.RemoteAddr(), network: "tcp"}
	if s.local != nil {
		s.network = s.local.Network()
	}
	s.rd.fn, s.wr.fn = s.recv, s.send
	return s
}

func (s *sockIO) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: s.network, Source: s.local, Addr: s.remote, Err: os.NewSyscallError(op, errno)}
}

const (
	recvFlags = syscall.MSG_DONTWAIT
	sendFlags = syscall.MSG_DONTWAIT | syscall.MSG_NOSIGNAL
)

// recv is the RawConn.Read callback: false asks to wait for readability.
func (s *sockIO) recv(fd uintptr) bool {
	p := s.rd.p
	for {
		s.rd.n, _, s.rd.errno = syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), recvFlags, 0, 0)
		if s.rd.errno != syscall.EINTR {
			return s.rd.errno != syscall.EAGAIN
		}
	}
}

func (s *sockIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rd.p, s.rd.n, s.rd.errno = p, 0, 0
	err := s.rc.Read(s.rd.fn)
	n, errno := s.rd.n, s.rd.errno
	s.rd.p = nil
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, s.opError("read", errno)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return int(n), nil
}

// send is the RawConn.Write callback: false asks to wait for writability.
func (s *sockIO) send(fd uintptr) bool {
	p := s.wr.p
	for s.wr.off < len(p) {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[s.wr.off])), uintptr(len(p)-s.wr.off), sendFlags, 0, 0)
		switch errno {
		case 0:
			if n == 0 {
				return true // cannot happen for a stream socket; see Write
			}
			s.wr.off += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait until writable
		default:
			s.wr.errno = errno
			return true
		}
	}
	return true
}

func (s *sockIO) Write(p []byte) (int, error) {
	s.wr.p, s.wr.off, s.wr.errno = p, 0, 0
	err := s.rc.Write(s.wr.fn)
	off, errno := s.wr.off, s.wr.errno
	s.wr.p = nil
	if err != nil {
		return off, err
	}
	if errno != 0 {
		return off, s.opError("write", errno)
	}
	if off < len(p) {
		return off, io.ErrShortWrite
	}
	return off, nil
}

var (
	_ io.Reader = (*sockIO)(nil)
	_ io.Writer = (*sockIO)(nil)
)
