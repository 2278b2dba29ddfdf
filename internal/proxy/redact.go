package proxy

import (
	"errors"
	"strings"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// notSecret names credentials whose values are addresses or settings and
// help a reader of the log (connector.PublicCredentialNames, shared with the
// SDK's test kit); every other credential is treated as a secret.
var notSecret = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range connector.PublicCredentialNames {
		m[n] = true
	}
	return m
}()

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
		if len(v) < connector.MinSecretLen || notSecret[name] {
			continue
		}
		out = strings.ReplaceAll(out, string(v), "[REDACTED]")
	}
	if out == msg {
		return err
	}
	return errors.New(out)
}
