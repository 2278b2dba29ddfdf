package proxy

import (
	"github.com/secretless-broker/secretless-broker/internal/redact"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// Redact returns err with every secret credential value replaced by
// [REDACTED] (see package redact for the forms it finds), as a last line of
// defence against a connector (possibly a third-party plugin) that put a
// secret into an error or panic message.
func Redact(err error, creds connector.CredentialValuesByID) error {
	return redact.Error(err, creds)
}
