//go:build !unix

package pg

import "net"

// streamPair returns an in-memory pipe: without unix sockets there is no
// half-close between the broker's relay and the client's TLS session.
func streamPair() (net.Conn, net.Conn, error) {
	a, b := net.Pipe()
	return a, b, nil
}
