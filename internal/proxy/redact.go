package proxy

import (
	"errors"
	"strings"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// notSecret names credentials whose values are addresses or settings and
// help a reader of the log; every other credential is treated as a secret.
var notSecret = map[string]bool{
	"host": true, "port": true, "username": true, "user": true, "database": true, "dbname": true,
	"sslmode": true, "sslhost": true, "address": true, "url": true, "endpoint": true, "region": true,
}

// Redact returns err with every secret credential value replaced by
// [REDACTED], as a last line of defence against a connector (possibly a
// third-party plugin) that put a secret into an error or panic message.
func Redact(err error, creds connector.CredentialValuesByID) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	out := msg
	for name, v := range creds {
		// Values under 4 bytes are not searched for: they would match
		// ordinary words all over the message (such a short secret is no
		// secret anyway).
		if len(v) < 4 || notSecret[name] {
			continue
		}
		out = strings.ReplaceAll(out, string(v), "[REDACTED]")
	}
	if out == msg {
		return err
	}
	return errors.New(out)
}
