//go:build unix

package plugins

import "syscall"

// openNoFollow makes opening a plugin file fail on a symlink and not block
// on a FIFO.
const openNoFollow = syscall.O_NOFOLLOW | syscall.O_NONBLOCK

// openNonBlock makes opening a file not block on a FIFO.
const openNonBlock = syscall.O_NONBLOCK
