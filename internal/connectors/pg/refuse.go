package pg

import (
	"net"

	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// Refuse implements tcp.Refuser: the broker calls it instead of Connect when
// it will not serve the client. It answers the client's encryption requests
// as Connect would, then sends one FATAL ErrorResponse: SQLSTATE 53300
// (too_many_connections) at the service's maxConnections limit, 08001
// (sqlclient_unable_to_establish_sqlconnection) when the credentials could
// not be fetched. A CancelRequest is still forwarded (as PostgreSQL itself
// handles cancels before its connection limit), so Ctrl-C keeps working when
// the service is full; like a real server, it gets no answer.
func (c *pgConnector) Refuse(clientConn net.Conn, reason tcp.RefuseReason) {
	s := &session{c: c, raw: clientConn, client: clientConn, deadline: c.handshakeDeadline(clientConn)}
	pkt, err := s.readClientStartup()
	if err != nil {
		return
	}
	if pkt.kind == kindCancelRequest {
		if c := s.cancel(pkt); c != nil {
			_ = c.Close()
		}
		return
	}
	code := codeUnableToConnect
	if reason == tcp.RefuseTooManyConnections {
		code = codeTooManyConnections
	}
	_, _ = s.client.Write(errorResponse(code, "secretless: "+string(reason), ""))
}

var _ tcp.Refuser = (*pgConnector)(nil)
