package main

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// ValidateCredentials implements connector.CredentialsValidator: the broker
// calls it at start-up with the credential names a service declares (and the
// values written literally in the config), so a missing password stops the
// broker instead of failing the first connection.
func (plugin) ValidateCredentials(_ []byte, names []string, literal connector.CredentialValuesByID) error {
	has := map[string]bool{}
	for _, n := range names {
		has[n] = true
	}
	var errs []error
	for _, required := range []string{"host", "password"} {
		if !has[required] {
			errs = append(errs, fmt.Errorf("redis: credential %s is missing", required))
		}
	}
	if p, ok := literal["port"]; ok {
		if n, err := strconv.Atoi(string(p)); err != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("redis: credential port %q is not a port number", p))
		}
	}
	return errors.Join(errs...)
}

var _ connector.CredentialsValidator = plugin{}
