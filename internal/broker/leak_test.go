package broker

import (
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/registry"
	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// leakyEntry is a connector that does everything a careless plugin might
// with its secret: logs it through the SDK logger in several forms, then
// panics with it.
var leakyEntry = registry.Entry{ID: "leaky", Type: sdk.TypeTCPConnector, Source: "test", TCP: tcp.PluginFunc(
	func(r connector.Resources) tcp.Connector {
		log := r.Logger()
		return tcp.ConnectorFunc(func(_ net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
			pw := c["token"]
			log.Infof("token is %s", pw)
			log.Debugf("token bytes %v", pw)
			log.Warnf("token hex %x", pw)
			log.Errorln("basic", base64.StdEncoding.EncodeToString(append([]byte("user:"), pw...)))
			log.CopyWith("sub", true).Debugf("again %q", pw)
			panic(pw)
		})
	})}

func TestConnectorLeaksRedacted(t *testing.T) {
	const secret = "s3cr3t-Leaky-Value"
	t.Setenv("TOKEN_L", secret)
	addr := freeAddr(t)
	r := startWith(t, "version: 2\nservices:\n  l:\n    connector: leaky\n    listenOn: tcp://"+addr+
		"\n    credentials:\n      token:\n        from: env\n        get: TOKEN_L\n", []registry.Entry{leakyEntry})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Read(make([]byte, 1))
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(r.logs.String(), "connector panicked") {
		if time.Now().After(deadline) {
			t.Fatalf("no panic logged:\n%s", r.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	logs := r.logs.String()
	for _, form := range []string{secret, fmt.Sprint([]byte(secret)), fmt.Sprintf("%x", secret),
		base64.StdEncoding.EncodeToString([]byte(secret))[:8], "Leaky-Value"} {
		if strings.Contains(logs, form) {
			t.Errorf("log holds the secret as %q:\n%s", form, logs)
		}
	}
	for _, line := range []string{"token is [REDACTED]", "token bytes [REDACTED]", "token hex [REDACTED]", "again", "connector panicked: [REDACTED]"} {
		if !strings.Contains(logs, line) {
			t.Errorf("log lacks %q:\n%s", line, logs)
		}
	}
}
