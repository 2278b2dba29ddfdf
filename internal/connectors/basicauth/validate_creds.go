package basicauth

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/secretless-broker/secretless-broker/internal/typo"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// ValidateCredentials implements connector.CredentialsValidator: username
// and password must be declared, and a value written in the file must be
// one Basic authentication can carry (checked again per request for
// values from providers).
func (plugin) ValidateCredentials(_ []byte, names []string, literal connector.CredentialValuesByID) error {
	var errs []error
	for _, n := range []string{"username", "password"} {
		if !slices.Contains(names, n) {
			errs = append(errs, fmt.Errorf("basic_auth: credential %s is missing", n))
		}
	}
	if u, ok := literal["username"]; ok && bytes.IndexByte(u, ':') >= 0 {
		errs = append(errs, errors.New("credential username: contains a colon, which Basic authentication cannot carry"))
	}
	for _, n := range []string{"username", "password"} {
		if v, ok := literal[n]; ok && bytes.ContainsAny(v, "\r\n\x00") {
			hint := ""
			if v[len(v)-1] == '\n' {
				hint = " (it ends with a line break: a file written with echo has one; write it with printf '%s')"
			}
			errs = append(errs, fmt.Errorf("credential %s: contains a line break or NUL%s", n, hint))
		}
	}
	// A misspelt credential is unused, and the one meant missing.
	for _, n := range names {
		if n == "username" || n == "password" {
			continue
		}
		if meant := typo.Closest(n, []string{"username", "password"}, nil); meant != "" {
			errs = append(errs, fmt.Errorf("credential %s: not a basic_auth credential; did you mean %q?", n, meant))
		}
	}
	return errors.Join(errs...)
}

var _ connector.CredentialsValidator = plugin{}
