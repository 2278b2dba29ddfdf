// Command redis is an example TCP connector plugin for secretless-broker. It
// logs in to a Redis server with AUTH on behalf of the client, so the client
// connects to the broker without knowing any password.
//
// Build it with
//
//	go build -buildmode=plugin -o=/path/to/plugins/redis.so ./examples/plugins/redis
//
// Credentials: host (required), port (default 6379), password (required) and
// username (optional; when set, the ACL form "AUTH username password" is used).
package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
	"github.com/secretless-broker/secretless-broker/sdk/log"
)

const (
	defaultPort = "6379"
	// dialTimeout bounds connecting to the target and the AUTH exchange.
	dialTimeout = 10 * time.Second
	keepAlive   = 30 * time.Second
	// maxReplyLen caps the AUTH reply line we are willing to read.
	maxReplyLen = 4096
)

// PluginInfo describes the plugin to the broker.
func PluginInfo() map[string]string {
	return map[string]string{
		sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion,
		sdk.KeyType:             sdk.TypeTCPConnector,
		sdk.KeyID:               "redis",
		sdk.KeyDescription:      "authenticates Redis connections with AUTH (password or ACL user)",
	}
}

// GetTCPPlugin returns the plugin's connector factory.
func GetTCPPlugin() tcp.Plugin { return plugin{} }

type plugin struct{}

// NewConnector builds the connector for one service.
func (plugin) NewConnector(r connector.Resources) tcp.Connector {
	return &redisConnector{logger: r.Logger()}
}

// ValidateConfig refuses a config block: everything this connector needs
// comes from credentials.
func (plugin) ValidateConfig(config []byte) error {
	switch string(bytes.TrimSpace(config)) {
	case "", "{}", "null", "~":
		return nil
	}
	return errors.New("redis connector takes no config block; put host, port, username and password under credentials")
}

type redisConnector struct {
	logger log.Logger
}

// Connect dials the target, authenticates and returns the connection.
func (c *redisConnector) Connect(clientConn net.Conn, creds connector.CredentialValuesByID) (net.Conn, error) {
	backend, err := c.connect(creds)
	if err != nil {
		// The client speaks RESP, so tell it in RESP before the broker
		// closes its connection. err never contains the password.
		_, _ = clientConn.Write(respError("ERR secretless: " + err.Error()))
		return nil, err
	}
	return backend, nil
}

func (c *redisConnector) connect(creds connector.CredentialValuesByID) (net.Conn, error) {
	host := string(creds["host"])
	if host == "" {
		return nil, errors.New("redis: credential host is missing")
	}
	port := string(creds["port"])
	if port == "" {
		port = defaultPort
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("redis: credential port %q is not a port number", port)
	}
	password := creds["password"]
	if len(password) == 0 {
		return nil, errors.New("redis: credential password is missing")
	}
	addr := net.JoinHostPort(host, port)

	dialer := net.Dialer{Timeout: dialTimeout, KeepAlive: keepAlive}
	conn, err := dialer.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("redis: cannot reach %s: %w", addr, err)
	}
	if err := auth(conn, creds["username"], password); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("redis: login to %s failed: %w", addr, err)
	}
	c.logger.Debugf("authenticated to redis at %s", addr)
	return conn, nil
}

// auth sends AUTH and checks that the server answers +OK.
func auth(conn net.Conn, username, password []byte) error {
	if err := conn.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
		return err
	}
	args := [][]byte{[]byte("AUTH"), password}
	if len(username) > 0 {
		args = [][]byte{[]byte("AUTH"), username, password}
	}
	cmd := respArray(args...)
	_, err := conn.Write(cmd)
	clear(cmd) // the buffer holds a copy of the password
	if err != nil {
		return fmt.Errorf("sending AUTH: %w", err)
	}

	reply, err := readLine(conn)
	if err != nil {
		return fmt.Errorf("reading AUTH reply: %w", err)
	}
	switch {
	case string(reply) == "+OK":
		return conn.SetDeadline(time.Time{})
	case len(reply) > 0 && reply[0] == '-':
		// A server error such as "WRONGPASS invalid username-password
		// pair". Only its error code (the first word) is passed on: a
		// hostile or buggy target could echo the password, or a variant
		// of it, in the rest of the text.
		return fmt.Errorf("server refused the login (%s)", errorCode(reply[1:]))
	default:
		return errors.New("unexpected reply to AUTH")
	}
}

// errorCode returns the first word of a RESP error if it is an upper-case
// code such as WRONGPASS or NOAUTH, and "error" otherwise.
func errorCode(msg []byte) string {
	code, _, _ := bytes.Cut(msg, []byte(" "))
	if len(code) == 0 || len(code) > 32 {
		return "error"
	}
	for _, c := range code {
		if (c < 'A' || c > 'Z') && c != '_' {
			return "error"
		}
	}
	return string(code)
}

// respArray encodes a command as a RESP array of bulk strings.
func respArray(args ...[]byte) []byte {
	b := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n", len(a))
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	return b
}

// respError encodes msg as a RESP simple error, which must be one line.
func respError(msg string) []byte {
	b := []byte("-")
	for _, r := range msg {
		if r == '\r' || r == '\n' {
			r = ' '
		}
		b = append(b, string(r)...)
	}
	return append(b, "\r\n"...)
}

// readLine reads one CRLF-terminated line without reading past it, so no
// byte meant for the client is swallowed.
func readLine(conn net.Conn) ([]byte, error) {
	var line []byte
	one := make([]byte, 1)
	for len(line) < maxReplyLen {
		if _, err := conn.Read(one); err != nil {
			return nil, err
		}
		if one[0] == '\n' {
			return bytes.TrimSuffix(line, []byte("\r")), nil
		}
		line = append(line, one[0])
	}
	return nil, errors.New("reply line too long")
}

var (
	_ tcp.Plugin    = plugin{}
	_ tcp.Validator = plugin{}
)

// main is never called: the broker loads this package with plugin.Open. It
// exists so that "go build ./..." and "go vet ./..." work on the repository.
func main() {}
