// Test plugin for package plugins; see plugins_test.go.
package main

import (
	"net"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// PluginInfo describes the plugin.
func PluginInfo() map[string]string {
	return map[string]string{
		sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion,
		sdk.KeyType:             sdk.TypeTCPConnector,
		sdk.KeyID:               "test-tcp",
		sdk.KeyDescription:      "test plugin test-tcp" + variant,
	}
}

// variant is set with -ldflags=-X to make builds that differ only in data.
var variant string

// GetTCPPlugin returns a connector that hands back the client connection.
func GetTCPPlugin() tcp.Plugin {
	return tcp.PluginFunc(func(connector.Resources) tcp.Connector {
		return tcp.ConnectorFunc(func(c net.Conn, _ connector.CredentialValuesByID) (net.Conn, error) { return c, nil })
	})
}
