// Package connector holds what every connector, TCP or HTTP, built in or
// plugin, receives from the broker: its Resources and its credentials.
package connector

import (
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/secretless-broker/secretless-broker/sdk/log"
)

// Resources is what the broker gives a connector when it is built for one
// service.
type Resources interface {
	// Config returns the service's connector-specific "config" block as YAML
	// bytes, or nil when the service has none. Decode it strictly and report
	// unknown keys: the broker calls NewConnector at start-up, so an error
	// found there is reported before any listener opens.
	Config() []byte
	// Logger returns a logger scoped to the service.
	Logger() log.Logger
}

// NewResources returns Resources holding a config block and a logger, for
// tests and for code that builds a connector outside the broker (the broker
// passes its own implementation). It has the signature of the CyberArk
// Secretless Broker SDK function of the same name, so ported tests keep
// compiling.
func NewResources(config []byte, logger log.Logger) Resources {
	return resources{config: config, logger: logger}
}

type resources struct {
	config []byte
	logger log.Logger
}

func (r resources) Config() []byte     { return r.config }
func (r resources) Logger() log.Logger { return r.logger }

// CredentialValuesByID maps a credential name, as written under the
// service's "credentials" key, to its value. Values are fetched anew for
// every connection (TCP) or request (HTTP), so rotated secrets take effect
// without a restart. The broker zeroes them once the connector returns: a
// connector must not keep references to the slices.
//
// The type prints its keys only; values print as [REDACTED] in every fmt
// verb and in log/slog when the map is printed directly or as an exported
// struct field (fmt cannot call methods on unexported fields, so never put it
// in one that might be printed).
type CredentialValuesByID map[string][]byte

// Zero overwrites every credential value with zero bytes.
func (c CredentialValuesByID) Zero() {
	for _, v := range c {
		clear(v)
	}
}

// String lists the credential names with redacted values.
func (c CredentialValuesByID) String() string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("map[")
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteString(":[REDACTED]")
	}
	b.WriteString("]")
	return b.String()
}

// Format implements fmt.Formatter so that no verb (%v, %+v, %#v, %s, %q, %x)
// can reveal a value.
func (c CredentialValuesByID) Format(f fmt.State, _ rune) {
	_, _ = f.Write([]byte(c.String()))
}

// LogValue implements slog.LogValuer with redacted values.
func (c CredentialValuesByID) LogValue() slog.Value {
	return slog.StringValue(c.String())
}

var (
	_ Resources      = resources{}
	_ fmt.Stringer   = CredentialValuesByID(nil)
	_ fmt.Formatter  = CredentialValuesByID(nil)
	_ slog.LogValuer = CredentialValuesByID(nil)
)
