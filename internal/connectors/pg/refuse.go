package pg

import (
	"net"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// Refuse implements tcp.Refuser: the broker calls it instead of Connect when
// the service is at its maxConnections limit. It answers the client's
// encryption requests as Connect would, then sends one FATAL ErrorResponse
// with SQLSTATE 53300 (too_many_connections), which libpq clients show as
// "FATAL: ...". A CancelRequest gets no answer, as from a real server.
func (c *pgConnector) Refuse(clientConn net.Conn, reason string) {
	s := &session{c: c, raw: clientConn, client: clientConn, deadline: time.Now().Add(c.cfg.handshakeTimeout)}
	pkt, err := s.readClientStartup()
	if err != nil || pkt.kind == kindCancelRequest {
		return
	}
	_, _ = s.client.Write(errorResponse(codeTooManyConnections, "secretless: "+reason, ""))
}

var _ tcp.Refuser = (*pgConnector)(nil)
