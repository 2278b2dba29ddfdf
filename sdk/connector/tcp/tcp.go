// Package tcp defines TCP connectors. A TCP connector receives the client's
// connection to the broker's listener and the service credentials, completes
// whatever handshakes the protocol needs on both sides (for example: read the
// client's startup message, log in to the target server with the real
// password), and returns an authenticated connection to the target. The broker
// then relays bytes in both directions until either side closes.
//
// A plugin of type "connector.tcp" exports
//
//	func GetTCPPlugin() tcp.Plugin
package tcp

import (
	"net"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// Connector authenticates one client connection to the target. A Connector
// that also implements io.Closer is closed once its service has stopped (at
// shutdown, or when a reload replaces or removes the service), for
// resources it keeps beyond single connections.
type Connector interface {
	// Connect is called once per accepted client connection. It returns the
	// target connection, ready for a plain byte relay. On error the broker
	// closes clientConn; a connector that wants the client to see a protocol
	// error message should write it to clientConn before returning. The error
	// text is logged, so it must not contain credential values.
	// credentialValuesByID is zeroed when Connect returns. clientConn
	// implements HandshakeDeadliner: the broker closes it at that deadline.
	Connect(clientConn net.Conn, credentialValuesByID connector.CredentialValuesByID) (backendConn net.Conn, err error)
}

// IdleCounter is an optional interface for a Connector that keeps
// authenticated target connections open between clients (a pool).
// IdleConnections is how many it holds now; the broker reports it as the
// service's secretless_target_connections_idle gauge, calling it at each
// metrics scrape, from any goroutine, so it must be cheap and safe for
// concurrent use.
type IdleCounter interface {
	IdleConnections() int
}

// SessionEnder is an optional interface for the target connection Connect
// returns. By default the broker passes an EOF from either side on as a
// half-close and keeps relaying the other direction until it ends too. When
// EndsSessionAtEOF reports true, the target's EOF ends the whole session
// instead: once the broker has relayed the target's last bytes it closes
// both connections, as for protocols whose servers never half-close
// (PostgreSQL, MySQL), so a client that keeps its socket open does not hold
// a session that is over.
type SessionEnder interface {
	EndsSessionAtEOF() bool
}

// ConnectorFunc adapts an ordinary function to the Connector interface.
type ConnectorFunc func(clientConn net.Conn, credentialValuesByID connector.CredentialValuesByID) (net.Conn, error)

// Connect calls f.
func (f ConnectorFunc) Connect(clientConn net.Conn, credentialValuesByID connector.CredentialValuesByID) (net.Conn, error) {
	return f(clientConn, credentialValuesByID)
}

// Plugin builds a Connector for a service. NewConnector is called once per
// service at start-up, before any listener opens. Configuration problems
// should be reported by implementing Validator, so that they stop start-up
// instead of surfacing at the first connection.
type Plugin interface {
	NewConnector(connector.Resources) Connector
}

// Validator is an optional interface a Plugin may implement to check a
// service's config block at load time. A non-nil error refuses start-up and
// is reported with the service name.
type Validator interface {
	ValidateConfig(config []byte) error
}

// PluginFunc adapts a function to the Plugin interface.
type PluginFunc func(connector.Resources) Connector

// ConnectorConstructor is the name the CyberArk Secretless Broker SDK gives
// to PluginFunc. It is the same type, so a ported plugin that returns
// ConnectorConstructor(NewConnector) from its GetTCPPlugin compiles
// unchanged.
type ConnectorConstructor = PluginFunc

// NewConnector calls f.
func (f PluginFunc) NewConnector(r connector.Resources) Connector { return f(r) }

var (
	_ Connector = ConnectorFunc(nil)
	_ Plugin    = PluginFunc(nil)
)
