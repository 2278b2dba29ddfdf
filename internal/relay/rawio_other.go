//go:build !linux

package relay

import (
	"io"
	"net"
)

// sockIO is only used on Linux; elsewhere the relay uses the
// connections' own Read and Write.
type sockIO struct{ io.ReadWriter }

func newSockIO(net.Conn) *sockIO { return nil }

// pipeLoop: no event loop here; every session uses goroutines.
func pipeLoop(c, t *end) (Result, bool, *end, *end, func()) {
	return Result{}, true, c, t, func() {}
}

func closeSession(net.Conn) {}
