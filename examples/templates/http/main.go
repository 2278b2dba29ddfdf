// Command myhttpconnector is a template for a secretless-broker HTTP
// connector plugin. Copy this directory, rename the module and the id, and
// change decorate to add your API's credentials (see README.md).
//
// As shipped it puts the api_key credential into a request header, named
// by the optional config key "header" (default X-Api-Key), replacing any
// value the client sent.
//
// Credentials: api_key (required). Config: header (optional).
package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

// PluginInfo describes the plugin. TODO: choose your id.
func PluginInfo() map[string]string {
	return map[string]string{
		sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion,
		sdk.KeyType:             sdk.TypeHTTPConnector,
		sdk.KeyID:               "my-http-connector",
		sdk.KeyDescription:      "TODO: one line saying which API this connector authenticates to",
	}
}

// GetHTTPPlugin returns the connector factory. The broker calls it once.
func GetHTTPPlugin() sdkhttp.Plugin { return plugin{} }

type plugin struct{}

// config is the service's "config" block, minus the keys the broker's
// proxy reads itself (authenticateURLsMatching, forceSSL, ...).
type config struct {
	Header string // header that carries the key
}

// parseConfig reads a block of "key: value" lines, the YAML the broker
// passes for a flat block. A connector with nested config would use a YAML
// library; note that a plugin must then use the very version the broker was
// built with ("secretless-broker plugins env" lists it).
func parseConfig(block []byte) (config, error) {
	c := config{Header: "X-Api-Key"}
	for i, line := range strings.Split(string(block), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line == "{}" || line == "null" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return c, fmt.Errorf("config line %d: want key: value", i+1)
		}
		value = strings.Trim(strings.TrimSpace(value), `"'`)
		switch strings.TrimSpace(key) {
		case "header":
			if value == "" || strings.ContainsAny(value, " :\t\r\n") {
				return c, fmt.Errorf("config header: %q is not a header name", value)
			}
			c.Header = http.CanonicalHeaderKey(value)
		default:
			return c, fmt.Errorf("config: unknown key %q (this connector knows header)", strings.TrimSpace(key))
		}
	}
	return c, nil
}

// ValidateConfig checks the config block at start-up.
func (plugin) ValidateConfig(block []byte) error {
	_, err := parseConfig(block)
	return err
}

// ValidateCredentials checks at start-up that the service declares api_key.
func (plugin) ValidateCredentials(_ []byte, names []string, _ connector.CredentialValuesByID) error {
	for _, n := range names {
		if n == "api_key" {
			return nil
		}
	}
	return errors.New("credential api_key is missing")
}

// NewConnector is called once per service, after ValidateConfig accepted
// its block, so the error cannot happen here.
func (plugin) NewConnector(r connector.Resources) sdkhttp.Connector {
	c, _ := parseConfig(r.Config())
	return &myConnector{cfg: c}
}

type myConnector struct {
	cfg config // read-only after NewConnector: Connect runs concurrently
}

// Connect adds credentials to one outgoing request. It is called for every
// request, concurrently, with fresh credentials that the broker zeroes when
// it returns; string(...) copies, so a header value outlives them. Change
// only r. Errors must not contain credential values.
func (c *myConnector) Connect(r *http.Request, creds connector.CredentialValuesByID) error {
	key := creds["api_key"]
	if len(key) == 0 {
		return errors.New("credential api_key is empty")
	}
	if bytes.ContainsAny(key, "\r\n") {
		return errors.New("credential api_key contains a line break")
	}
	r.Header.Set(c.cfg.Header, string(key)) // TODO: your API's scheme
	return nil
}

// Interface guards.
var (
	_ sdkhttp.Plugin                 = plugin{}
	_ sdkhttp.Validator              = plugin{}
	_ connector.CredentialsValidator = plugin{}
	_ sdkhttp.Connector              = (*myConnector)(nil)
)

// main is not called: the broker opens this package as a plugin.
func main() {}
