// Package basicauth is the built-in basic_auth HTTP connector: it sets
// "Authorization: Basic base64(username:password)" on every request, replacing
// any Authorization header the client sent.
//
// Credentials: username and password (both required; the username may not
// contain a colon, RFC 7617). The connector takes no config keys of its own;
// the proxy-level keys (authenticateURLsMatching, forceSSL, ...) are removed
// by the proxy before the block reaches ValidateConfig.
package basicauth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"

	"github.com/secretless-broker/secretless-broker/internal/connkeys"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

// ID is the connector id services name in "connector:".
const ID = "basic_auth"

// Description is a one-line summary for listings.
const Description = "sets Authorization: Basic from the username and password credentials"

// Plugin returns the connector factory.
func Plugin() sdkhttp.Plugin { return plugin{} }

type plugin struct{}

func (plugin) NewConnector(connector.Resources) sdkhttp.Connector { return basicAuth{} }

// ValidateConfig accepts only an empty block: basic_auth has no keys of its
// own. Each key given is reported by name.
func (plugin) ValidateConfig(config []byte) error {
	return connkeys.Unknown(config, "basic_auth", nil)
}

type basicAuth struct{}

// Connect sets the Authorization header.
func (basicAuth) Connect(r *http.Request, creds connector.CredentialValuesByID) error {
	user, pass := creds["username"], creds["password"]
	for _, name := range []string{"username", "password"} {
		if _, ok := creds[name]; !ok {
			return fmt.Errorf("basic_auth: credential %s is missing", name)
		}
	}
	if bytes.IndexByte(user, ':') >= 0 {
		return errors.New("basic_auth: credential username contains a colon, which Basic authentication cannot carry")
	}
	if bytes.ContainsAny(user, "\r\n\x00") || bytes.ContainsAny(pass, "\r\n\x00") {
		return errors.New("basic_auth: a credential contains a line break or NUL")
	}
	raw := make([]byte, 0, len(user)+1+len(pass))
	raw = append(append(append(raw, user...), ':'), pass...)
	enc := make([]byte, len("Basic ")+base64.StdEncoding.EncodedLen(len(raw)))
	copy(enc, "Basic ")
	base64.StdEncoding.Encode(enc[len("Basic "):], raw)
	clear(raw)
	r.Header.Set("Authorization", string(enc))
	clear(enc)
	return nil
}

var (
	_ sdkhttp.Plugin    = plugin{}
	_ sdkhttp.Validator = plugin{}
	_ sdkhttp.Connector = basicAuth{}
)
