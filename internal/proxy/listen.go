package proxy

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/secretless-broker/secretless-broker/internal/config"
)

// ErrNotSocket is returned when a unix listenOn path exists and is not a socket.
var ErrNotSocket = errors.New("exists and is not a socket; refusing to replace it")

var umaskMu sync.Mutex

// Listen opens the listener for addr. A stale unix socket file is replaced;
// any other kind of file at that path is left alone and is an error. Unix
// sockets are created with mode (the umask is narrowed while the socket is
// bound, so there is no moment where it is more open than asked).
func Listen(addr config.Address, mode os.FileMode) (net.Listener, error) {
	switch addr.Network {
	case "tcp":
		l, err := net.Listen("tcp", addr.Address)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, unwrapOp(err))
		}
		return l, nil
	case "unix":
		if st, err := os.Lstat(addr.Address); err == nil {
			if st.IsDir() {
				return nil, fmt.Errorf("listen on %s: %s is a directory: listenOn names the socket file itself, such as %s (PostgreSQL clients given host=DIR port=PORT look for DIR/.s.PGSQL.PORT); %w",
					addr, addr.Address, filepath.Join(addr.Address, ".s.PGSQL.5432"), ErrNotSocket)
			}
			if st.Mode().Type() != fs.ModeSocket {
				return nil, fmt.Errorf("listen on %s: %s %w", addr, addr.Address, ErrNotSocket)
			}
			if c, err := net.Dial("unix", addr.Address); err == nil {
				_ = c.Close()
				return nil, fmt.Errorf("listen on %s: another process is serving this socket", addr)
			}
			if err := os.Remove(addr.Address); err != nil {
				return nil, fmt.Errorf("listen on %s: remove stale socket: %w", addr, err)
			}
		}
		if dir := filepath.Dir(addr.Address); dir != "" {
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				return nil, fmt.Errorf("listen on %s: directory %s does not exist (the broker creates the socket, not its directory)", addr, dir)
			}
		}
		umaskMu.Lock()
		old := syscall.Umask(0o777 &^ int(mode.Perm()))
		l, err := net.Listen("unix", addr.Address)
		syscall.Umask(old)
		umaskMu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, unwrapOp(err))
		}
		if err := os.Chmod(addr.Address, mode.Perm()); err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("listen on %s: chmod: %w", addr, err)
		}
		ul := l.(*net.UnixListener)
		// Go would unlink the path on Close whatever is there by then; we
		// unlink it only if it is still the socket we created.
		ul.SetUnlinkOnClose(false)
		st, err := os.Lstat(addr.Address)
		if err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		return &unixListener{UnixListener: ul, path: addr.Address, id: fileID(st)}, nil
	}
	return nil, fmt.Errorf("listen on %s: unsupported network %q", addr, addr.Network)
}

// unwrapOp drops the *net.OpError wrapper, whose text repeats the address.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		var sys *os.SyscallError
		if errors.As(op.Err, &sys) {
			return sys.Err
		}
		return op.Err
	}
	return err
}

// unixListener removes its socket file on Close, but only if the path still
// names the very socket it created (same device and inode): a file that
// replaced it is never deleted.
type unixListener struct {
	*net.UnixListener
	path string
	id   [2]uint64
	once sync.Once
}

func (u *unixListener) Close() error {
	err := u.UnixListener.Close()
	u.once.Do(func() {
		if st, lerr := os.Lstat(u.path); lerr == nil && st.Mode().Type() == fs.ModeSocket && fileID(st) == u.id {
			_ = os.Remove(u.path)
		}
	})
	return err
}

func fileID(st os.FileInfo) [2]uint64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return [2]uint64{uint64(sys.Dev), sys.Ino}
	}
	return [2]uint64{}
}
