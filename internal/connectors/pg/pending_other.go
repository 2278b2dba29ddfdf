//go:build !unix

package pg

import "net"

// hasPendingData cannot peek portably here; see pending_unix.go. Reads are
// unbuffered during the startup, so injected bytes still reach the TLS
// layer, which rejects them.
func hasPendingData(net.Conn) bool { return false }
