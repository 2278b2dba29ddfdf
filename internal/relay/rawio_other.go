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
