// Command linetoken-ported is a TCP connector plugin written for the CyberArk
// Secretless Broker plugin API (pluginAPIVersion 0.1.0), in that API's usual
// style: string keys in PluginInfo, a ConnectorConstructor, a ConnectorFunc
// method value and the logger from connector.Resources.
//
// examples/ported/testdata/secretless/main.go is the plugin as written for
// the CyberArk Secretless Broker; examples/ported/main.go is the same file
// after scripts/port-secretless-plugin.sh, which changes only the import
// paths.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
	"github.com/secretless-broker/secretless-broker/sdk/log"
)

// PluginInfo is looked up by the broker when it loads the plugin.
func PluginInfo() map[string]string {
	return map[string]string{
		"pluginAPIVersion": "0.1.0",
		"type":             "connector.tcp",
		"id":               "linetoken-ported",
		"description":      "logs in to a line-protocol target with TOKEN <token> (ported)",
	}
}

// GetTCPPlugin is looked up by the broker when it loads the plugin.
func GetTCPPlugin() tcp.Plugin {
	return tcp.ConnectorConstructor(NewConnector)
}

// NewConnector builds the connector of one service.
func NewConnector(res connector.Resources) tcp.Connector {
	c := &tokenConnector{logger: res.Logger()}
	return tcp.ConnectorFunc(c.Connect)
}

type tokenConnector struct {
	logger log.Logger
}

// Connect logs in to the target named by the address credential.
func (c *tokenConnector) Connect(
	clientConn net.Conn,
	credentialValuesByID connector.CredentialValuesByID,
) (net.Conn, error) {
	address := string(credentialValuesByID["address"])
	token := credentialValuesByID["token"]
	if address == "" || len(token) == 0 {
		return nil, errors.New("address and token credentials are required")
	}

	backend, err := net.DialTimeout("tcp", address, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s: %w", address, err)
	}
	if _, err := fmt.Fprintf(backend, "TOKEN %s\n", token); err != nil {
		backend.Close()
		return nil, err
	}

	reply := make([]byte, 3)
	if _, err := io.ReadFull(backend, reply); err != nil || string(reply) != "OK\n" {
		backend.Close()
		return nil, fmt.Errorf("%s refused the token", address)
	}
	c.logger.Debugf("logged in to %s", address)
	return backend, nil
}

func main() {}
