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
		sdk.KeyID:               "panic-get",
		sdk.KeyDescription:      "test plugin panic-get" + variant,
	}
}

// variant is set with -ldflags=-X to make builds that differ only in data.
var variant string

var _ net.Conn
var _ connector.Resources

// GetTCPPlugin panics.
func GetTCPPlugin() tcp.Plugin { panic("boom in GetTCPPlugin") }
