package main

import (
	"net"

	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// Refuse implements tcp.Refuser: when the broker will not serve a client
// (maxConnections reached, credentials unavailable), the client reads one
// RESP error saying why instead of a bare connection reset.
func (c *redisConnector) Refuse(clientConn net.Conn, reason tcp.RefuseReason) {
	_, _ = clientConn.Write(respError("ERR secretless: " + string(reason)))
}

var _ tcp.Refuser = (*redisConnector)(nil)
