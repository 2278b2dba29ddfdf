// Command mytcpconnector is a template for a secretless-broker TCP connector
// plugin. Copy this directory, rename the module and the id, and replace
// login with your protocol's authentication (see README.md).
//
// As shipped it sends one "AUTH <password>" line and expects a reply that
// starts with "+OK": that is Redis's inline AUTH command, so the template
// can be tried against a password-protected redis-server before it is
// changed.
//
// Credentials: host (required), port (required), password (required).
package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
	"github.com/secretless-broker/secretless-broker/sdk/log"
)

// handshakeTimeout bounds dialing and logging in to the target. The broker
// also puts a deadline on the client connection while Connect runs.
const handshakeTimeout = 10 * time.Second

// PluginInfo describes the plugin. TODO: choose your id (lower case,
// [a-z0-9_:.-]); services name it in their "connector" key.
func PluginInfo() map[string]string {
	return map[string]string{
		sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion,
		sdk.KeyType:             sdk.TypeTCPConnector,
		sdk.KeyID:               "my-tcp-connector",
		sdk.KeyDescription:      "TODO: one line saying what this connector logs in to",
	}
}

// GetTCPPlugin returns the connector factory. The broker calls it once.
func GetTCPPlugin() tcp.Plugin { return plugin{} }

type plugin struct{}

// NewConnector is called once per service at start-up, after
// ValidateConfig and ValidateCredentials accepted the service.
func (plugin) NewConnector(r connector.Resources) tcp.Connector {
	return &myConnector{logger: r.Logger()}
}

// ValidateConfig checks the service's "config" block (YAML) at start-up.
// This connector takes none. TODO: parse and check yours; name the key in
// every error.
func (plugin) ValidateConfig(config []byte) error {
	switch string(bytes.TrimSpace(config)) {
	case "", "{}", "null":
		return nil
	}
	return errors.New("my-tcp-connector takes no config block")
}

// ValidateCredentials checks at start-up that the service declares every
// credential Connect needs, and the values written literally in the config.
func (plugin) ValidateCredentials(_ []byte, names []string, literal connector.CredentialValuesByID) error {
	declared := map[string]bool{}
	for _, n := range names {
		declared[n] = true
	}
	var errs []error
	for _, want := range []string{"host", "port", "password"} {
		if !declared[want] {
			errs = append(errs, fmt.Errorf("credential %s is missing", want))
		}
	}
	if p, ok := literal["port"]; ok {
		if _, err := parsePort(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type myConnector struct {
	logger log.Logger
}

// Connect is called for every client connection with fresh credentials,
// which the broker zeroes when it returns: copy what must outlive the call.
// It returns a connection to the target that is authenticated and ready
// for a plain byte relay. Errors must not contain credential values.
func (c *myConnector) Connect(client net.Conn, creds connector.CredentialValuesByID) (net.Conn, error) {
	target, err := c.connect(creds)
	if err != nil {
		// TODO: tell the client in its protocol, or delete this line. The
		// placeholder protocol's errors are lines starting with "-".
		fmt.Fprintf(client, "-ERR secretless: %s\r\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return nil, err
	}
	return target, nil
}

func (c *myConnector) connect(creds connector.CredentialValuesByID) (net.Conn, error) {
	port, err := parsePort(creds["port"])
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(string(creds["host"]), strconv.Itoa(port))
	conn, err := net.DialTimeout("tcp", addr, handshakeTimeout)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := login(conn, creds["password"]); err != nil {
		conn.Close()
		return nil, fmt.Errorf("login to %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	c.logger.Debugf("logged in to %s", addr) // never log a credential value
	return conn, nil
}

// login authenticates conn. TODO: replace it with your protocol's login.
func login(conn net.Conn, password []byte) error {
	if len(password) == 0 || bytes.ContainsAny(password, " \r\n") {
		return errors.New("credential password is empty or contains a space or line break")
	}
	msg := append(append([]byte("AUTH "), password...), '\r', '\n')
	_, err := conn.Write(msg)
	clear(msg) // the buffer holds a copy of the password
	if err != nil {
		return err
	}
	reply, err := readLine(conn, 1024)
	if err != nil {
		return fmt.Errorf("reading the reply: %w", err)
	}
	if !strings.HasPrefix(reply, "+OK") {
		// A reply could echo the password; never pass it on unredacted.
		return fmt.Errorf("refused: %q", strings.ReplaceAll(reply, string(password), "[REDACTED]"))
	}
	return nil
}

// readLine reads one line a byte at a time, so that no byte meant for the
// client is consumed here.
func readLine(conn net.Conn, max int) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < max {
		if _, err := conn.Read(b); err != nil {
			return "", err
		}
		if b[0] == '\n' {
			return strings.TrimSuffix(string(line), "\r"), nil
		}
		line = append(line, b[0])
	}
	return "", errors.New("reply line too long")
}

func parsePort(p []byte) (int, error) {
	n, err := strconv.Atoi(string(p))
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("credential port %q is not a port number", p)
	}
	return n, nil
}

// Interface guards: the build fails if a method's signature is wrong.
var (
	_ tcp.Plugin                     = plugin{}
	_ tcp.Validator                  = plugin{}
	_ connector.CredentialsValidator = plugin{}
	_ tcp.Connector                  = (*myConnector)(nil)
)

// main is not called: the broker opens this package as a plugin.
func main() {}
