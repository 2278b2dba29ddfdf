// Test plugin for package plugins; see plugins_test.go.
package main

import (
	"net"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

var _ = sdk.PluginAPIVersion

// No PluginInfo.

// GetTCPPlugin returns a connector that hands back the client connection.
func GetTCPPlugin() tcp.Plugin {
	return tcp.PluginFunc(func(connector.Resources) tcp.Connector {
		return tcp.ConnectorFunc(func(c net.Conn, _ connector.CredentialValuesByID) (net.Conn, error) { return c, nil })
	})
}
