// Test plugin for package plugins; see plugins_test.go.
package main

import (
	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

// PluginInfo describes the plugin.
func PluginInfo() map[string]string {
	return map[string]string{
		sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion,
		sdk.KeyType:             sdk.TypeTCPConnector,
		sdk.KeyID:               "wrong-type",
		sdk.KeyDescription:      "test plugin wrong-type" + variant,
	}
}

// variant is set with -ldflags=-X to make builds that differ only in data.
var variant string

// GetTCPPlugin has the wrong signature.
func GetTCPPlugin() http.Plugin { return nil }
