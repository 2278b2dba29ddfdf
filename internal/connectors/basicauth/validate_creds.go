package basicauth

import (
	"errors"
	"fmt"
	"slices"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// ValidateCredentials implements connector.CredentialsValidator: username
// and password must be declared.
func (plugin) ValidateCredentials(_ []byte, names []string, _ connector.CredentialValuesByID) error {
	var errs []error
	for _, n := range []string{"username", "password"} {
		if !slices.Contains(names, n) {
			errs = append(errs, fmt.Errorf("basic_auth: credential %s is missing", n))
		}
	}
	return errors.Join(errs...)
}

var _ connector.CredentialsValidator = plugin{}
