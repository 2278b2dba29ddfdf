// Command linetoken is a TCP connector plugin for secretless-broker that
// lives in a Go module of its own, outside the broker's module, and imports
// nothing but the SDK and the standard library: the shape of a third-party
// plugin.
//
// It speaks a deliberately small protocol: on a new connection it sends
// "TOKEN <token>\n" to the target and expects "OK\n" back; after that the
// broker relays bytes unchanged. So the application connects to the broker
// without the token and lands on an authenticated connection.
//
// Credentials: address (host:port of the target) and token. No config block.
//
// Build it from this directory with
//
//	secretless-broker plugins build -o /path/to/plugins -s /path/to/PLUGINS_SHA256SUM.txt .
//
// or by hand as docs/plugins/build-and-secure.md explains.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// dialTimeout bounds connecting and logging in to the target.
const dialTimeout = 10 * time.Second

// PluginInfo describes the plugin to the broker.
func PluginInfo() map[string]string {
	return map[string]string{
		sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion,
		sdk.KeyType:             sdk.TypeTCPConnector,
		sdk.KeyID:               "linetoken",
		sdk.KeyDescription:      "logs in to a line-protocol target with TOKEN <token>",
	}
}

// GetTCPPlugin returns the connector factory.
func GetTCPPlugin() tcp.Plugin { return plugin{} }

type plugin struct{}

func (plugin) NewConnector(r connector.Resources) tcp.Connector {
	return tcp.ConnectorFunc(connect)
}

// ValidateConfig refuses a config block: everything comes from credentials.
func (plugin) ValidateConfig(config []byte) error {
	switch string(bytes.TrimSpace(config)) {
	case "", "{}", "null":
		return nil
	}
	return errors.New("linetoken takes no config block; put address and token under credentials")
}

// ValidateCredentials checks at start-up that the service declares both
// credentials and that a literal address is host:port.
func (plugin) ValidateCredentials(_ []byte, names []string, literal connector.CredentialValuesByID) error {
	var errs []error
	for _, want := range []string{"address", "token"} {
		if !contains(names, want) {
			errs = append(errs, fmt.Errorf("linetoken: credential %s is missing", want))
		}
	}
	if a, ok := literal["address"]; ok {
		if _, _, err := net.SplitHostPort(string(a)); err != nil {
			errs = append(errs, fmt.Errorf("linetoken: credential address %q is not host:port", a))
		}
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func connect(client net.Conn, creds connector.CredentialValuesByID) (net.Conn, error) {
	target, err := login(string(creds["address"]), creds["token"])
	if err != nil {
		// Tell the application in its own protocol; err holds no token.
		fmt.Fprintf(client, "ERR secretless: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return nil, err
	}
	return target, nil
}

func login(address string, token []byte) (net.Conn, error) {
	if address == "" || len(token) == 0 {
		return nil, errors.New("linetoken: credentials address and token are required")
	}
	if bytes.ContainsAny(token, " \r\n") {
		return nil, errors.New("linetoken: the token contains a space or line break")
	}
	conn, err := net.DialTimeout("tcp", address, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("linetoken: cannot reach %s: %w", address, err)
	}
	_ = conn.SetDeadline(time.Now().Add(dialTimeout))
	msg := append(append([]byte("TOKEN "), token...), '\n')
	_, err = conn.Write(msg)
	clear(msg) // the buffer holds a copy of the token
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("linetoken: sending the token to %s: %w", address, err)
	}
	// Read the reply byte by byte so that nothing meant for the client is
	// buffered here and lost.
	reply, err := readLine(conn, 512)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("linetoken: reading the reply of %s: %w", address, err)
	}
	if reply != "OK" {
		conn.Close()
		return nil, fmt.Errorf("linetoken: %s refused the token: %q", address, reply)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

func readLine(c net.Conn, max int) (string, error) {
	var line []byte
	one := make([]byte, 1)
	for len(line) < max {
		if _, err := c.Read(one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return strings.TrimSuffix(string(line), "\r"), nil
		}
		line = append(line, one[0])
	}
	return "", errors.New("reply too long")
}

var (
	_ tcp.Plugin                     = plugin{}
	_ tcp.Validator                  = plugin{}
	_ connector.CredentialsValidator = plugin{}
)

// main is not called: the broker opens this package as a plugin.
func main() {}
