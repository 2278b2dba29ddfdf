//go:build unix

package relay

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// sockIO reads and writes a stream socket through its syscall.RawConn with
// raw system calls. The socket is non-blocking, so read and write return at
// once, with EAGAIN when they would block, and the wait goes to the Go
// netpoller as for any net.Conn (RawConn's Read and Write wait for
// readiness, and closing the connection ends the wait). What is skipped is
// the runtime's bookkeeping around a system call that might block: with
// every P idle between small messages, each such call wakes the runtime's
// monitor thread, a futex call and two context switches per message. On the
// 2-core VM this cut the broker's CPU per pgbench select-only transaction
// by about a quarter (41 to 31 us at 8 clients; context switches at 1
// client from 5 to 2 per transaction, as many as pgbouncer's).
type sockIO struct {
	rc syscall.RawConn
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
	// A raw read on a blocking socket would hold its P (and stop the world
	// for the GC) until data arrives. Sockets from the net package are
	// non-blocking, but os.File.Fd on a dup (TCPConn.File) clears O_NONBLOCK
	// for the shared file description: use the ordinary path then.
	nonblocking := false
	if err := rc.Control(func(fd uintptr) {
		flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		nonblocking = errno == 0 && flags&syscall.O_NONBLOCK != 0
	}); err != nil || !nonblocking {
		return nil
	}
	return &sockIO{rc: rc}
}

// rawRW is read(2) or write(2) of a non-empty p on fd.
func rawRW(trap, fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

func (s *sockIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			n, errno = rawRW(syscall.SYS_READ, fd, p)
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", errno)}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (s *sockIO) Write(p []byte) (int, error) {
	var (
		off   int
		errno syscall.Errno
	)
	err := s.rc.Write(func(fd uintptr) bool {
		for off < len(p) {
			var n int
			n, errno = rawRW(syscall.SYS_WRITE, fd, p[off:])
			if errno == syscall.EINTR {
				continue
			}
			if errno == syscall.EAGAIN {
				return false
			}
			if errno != 0 {
				return true
			}
			off += n
		}
		return true
	})
	if err != nil {
		return off, err
	}
	if errno != 0 && errno != syscall.EAGAIN {
		return off, &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", errno)}
	}
	return off, nil
}

var (
	_ io.Reader = (*sockIO)(nil)
	_ io.Writer = (*sockIO)(nil)
)
