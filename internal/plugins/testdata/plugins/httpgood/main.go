// Test plugin for package plugins; see plugins_test.go.
package main

import (
	gohttp "net/http"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

// PluginInfo describes the plugin.
func PluginInfo() map[string]string {
	return map[string]string{
		sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion,
		sdk.KeyType:             sdk.TypeHTTPConnector,
		sdk.KeyID:               "test-http",
		sdk.KeyDescription:      "test plugin test-http" + variant,
	}
}

// variant is set with -ldflags=-X to make builds that differ only in data.
var variant string

// GetHTTPPlugin returns a connector that sets a header.
func GetHTTPPlugin() http.Plugin {
	return http.PluginFunc(func(connector.Resources) http.Connector {
		return http.ConnectorFunc(func(r *gohttp.Request, _ connector.CredentialValuesByID) error {
			r.Header.Set("X-Test-Plugin", "yes")
			return nil
		})
	})
}
