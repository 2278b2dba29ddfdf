package pg

import (
	"strings"

	"github.com/secretless-broker/secretless-broker/internal/typo"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// placeholder stands in, during load-time validation, for a credential a
// provider fetches per connection: its value is unknown, only its presence.
var placeholder = map[string][]byte{
	credHost: []byte("placeholder.invalid"), credUsername: []byte("placeholder"),
	credPort: []byte(defaultPort), credSSLMode: []byte(defaultSSLMode),
}

// ValidateCredentials implements connector.CredentialsValidator: the checks
// parseCredentials makes on every connection, made once at load time on
// the values known then (written in the file, or from env and file
// providers): required names, sslmode, port, host and the TLS files.
func (plugin) ValidateCredentials(_ []byte, names []string, literal connector.CredentialValuesByID) error {
	creds := connector.CredentialValuesByID{}
	for _, n := range names {
		if v, ok := literal[n]; ok {
			creds[n] = append([]byte(nil), v...)
			continue
		}
		if p, ok := placeholder[n]; ok {
			creds[n] = append([]byte(nil), p...)
			continue
		}
		if n == credSSLRootCert || n == credSSLCert || n == credSSLKey {
			// A certificate fetched per connection cannot be checked before
			// it exists; leave it out (with its pair) and check the rest.
			continue
		}
		creds[n] = []byte("x")
	}
	defer creds.Zero()
	if (creds[credSSLCert] == nil) != (creds[credSSLKey] == nil) {
		delete(creds, credSSLCert)
		delete(creds, credSSLKey)
	}
	if err := validatePairs(names); err != nil {
		return err
	}
	if err := validateNearMisses(names); err != nil {
		return err
	}
	_, err := parseCredentials(creds)
	return err
}

func validatePairs(names []string) error {
	has := map[string]bool{}
	for _, n := range names {
		has[n] = true
	}
	switch {
	case !has[credHost]:
		return credErr(credHost, "missing")
	case !has[credUsername] && has["user"]:
		return credErr("user", "not a pg credential: the login role is the username credential (rename user to username)")
	case !has[credUsername]:
		return credErr(credUsername, "missing")
	case has[credSSLCert] && !has[credSSLKey]:
		return credErr(credSSLKey, "missing (sslcert is set)")
	case has[credSSLKey] && !has[credSSLCert]:
		return credErr(credSSLCert, "missing (sslkey is set)")
	}
	return nil
}

// validateNearMisses refuses a credential name that is not a pg credential
// but is one or two edits away from one ("passwrod", "sslmod", "Password"):
// it would otherwise be sent to the server as a startup parameter, a secret
// value included, and the real credential would be missing.
func validateNearMisses(names []string) error {
	for _, n := range names {
		if knownCredentials[n] || libpqOnly[n] != "" || len(n) < 4 {
			continue // libpq options get their own message from parseCredentials
		}
		for k := range knownCredentials {
			if typo.EditDistance(strings.ToLower(n), k) <= 2 {
				return credErr(n, "not a pg credential; did you mean %q? (names that are not pg credentials are sent to the server as startup parameters)", k)
			}
		}
	}
	return nil
}

var _ connector.CredentialsValidator = plugin{}
