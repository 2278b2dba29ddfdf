// Package http defines HTTP connectors. An HTTP connector decorates each
// outgoing request of the broker's forward proxy with credentials: headers,
// query parameters or a signature. It never sees the response.
//
// A plugin of type "connector.http" exports
//
//	func GetHTTPPlugin() http.Plugin
package http

import (
	gohttp "net/http"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// Connector adds credentials to one request.
type Connector interface {
	// Connect modifies r in place before it is sent to the target.
	// credentialValuesByID is zeroed when Connect returns, so copy what must
	// outlive the call into the request (header values are strings, which
	// copies them). The error text is logged and must not contain secrets.
	Connect(r *gohttp.Request, credentialValuesByID connector.CredentialValuesByID) error
}

// ConnectorFunc adapts an ordinary function to the Connector interface.
type ConnectorFunc func(r *gohttp.Request, credentialValuesByID connector.CredentialValuesByID) error

// Connect calls f.
func (f ConnectorFunc) Connect(r *gohttp.Request, credentialValuesByID connector.CredentialValuesByID) error {
	return f(r, credentialValuesByID)
}

// Plugin builds a Connector for a service; NewConnector is called once per
// service at start-up.
type Plugin interface {
	NewConnector(connector.Resources) Connector
}

// Validator is an optional interface a Plugin may implement to check a
// service's config block at load time.
type Validator interface {
	ValidateConfig(config []byte) error
}

// PluginFunc adapts a function to the Plugin interface.
type PluginFunc func(connector.Resources) Connector

// ConnectorConstructor is the name the CyberArk Secretless Broker SDK gives
// to PluginFunc. It is the same type, so a ported plugin that returns
// ConnectorConstructor(NewConnector) from its GetHTTPPlugin compiles
// unchanged.
type ConnectorConstructor = PluginFunc

// NewConnector calls f.
func (f PluginFunc) NewConnector(r connector.Resources) Connector { return f(r) }

var (
	_ Connector = ConnectorFunc(nil)
	_ Plugin    = PluginFunc(nil)
)
