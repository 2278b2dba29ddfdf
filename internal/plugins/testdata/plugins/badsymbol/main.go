// Test plugin for package plugins; see plugins_test.go.
package main

import "github.com/secretless-broker/secretless-broker/sdk"

// PluginInfo describes the plugin.
func PluginInfo() map[string]string {
	return map[string]string{
		sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion,
		sdk.KeyType:             sdk.TypeTCPConnector,
		sdk.KeyID:               "bad-symbol",
		sdk.KeyDescription:      "test plugin bad-symbol" + variant,
	}
}

// variant is set with -ldflags=-X to make builds that differ only in data.
var variant string

// No GetTCPPlugin.
