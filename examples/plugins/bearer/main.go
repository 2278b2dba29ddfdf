// Command bearer is an example HTTP connector plugin for secretless-broker. It
// adds "Authorization: Bearer <token>" to every request the broker's forward
// proxy sends, so the client never holds the token.
//
// Build it with
//
//	go build -buildmode=plugin -o=/path/to/plugins/bearer.so ./examples/plugins/bearer
//
// Credentials: token (required).
package main

import (
	"bytes"
	"errors"
	"net/http"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

// PluginInfo describes the plugin to the broker.
func PluginInfo() map[string]string {
	return map[string]string{
		sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion,
		sdk.KeyType:             sdk.TypeHTTPConnector,
		sdk.KeyID:               "bearer",
		sdk.KeyDescription:      "adds an Authorization: Bearer header from the token credential",
	}
}

// GetHTTPPlugin returns the plugin's connector factory.
func GetHTTPPlugin() sdkhttp.Plugin { return plugin{} }

type plugin struct{}

// NewConnector builds the connector for one service.
func (plugin) NewConnector(connector.Resources) sdkhttp.Connector { return bearerConnector{} }

// ValidateConfig refuses connector keys in the config block (the broker has
// already removed the proxy's own keys): the token is a credential.
func (plugin) ValidateConfig(config []byte) error {
	switch string(bytes.TrimSpace(config)) {
	case "", "{}", "null", "~":
		return nil
	}
	return errors.New("bearer connector has no config keys of its own (only the proxy's, such as authenticateURLsMatching); put the token under credentials")
}

type bearerConnector struct{}

// Connect sets the Authorization header, replacing any the client sent.
func (bearerConnector) Connect(r *http.Request, creds connector.CredentialValuesByID) error {
	token := creds["token"]
	if len(token) == 0 {
		return errors.New("bearer: credential token is missing")
	}
	// A CR or LF would let the token inject headers; net/http would refuse
	// to send it anyway, but say why here.
	if bytes.ContainsAny(token, "\r\n") {
		return errors.New("bearer: credential token contains a line break")
	}
	// string() copies, so the header outlives the zeroing of creds.
	r.Header.Set("Authorization", "Bearer "+string(token))
	return nil
}

var (
	_ sdkhttp.Plugin    = plugin{}
	_ sdkhttp.Validator = plugin{}
)

// main is never called: the broker loads this package with plugin.Open. It
// exists so that "go build ./..." and "go vet ./..." work on the repository.
func main() {}
