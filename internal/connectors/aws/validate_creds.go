package aws

import (
	"errors"
	"fmt"
	"slices"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// ValidateCredentials implements connector.CredentialsValidator:
// accessKeyId and secretAccessKey must be declared (accessToken is optional).
func (plugin) ValidateCredentials(_ []byte, names []string, _ connector.CredentialValuesByID) error {
	var errs []error
	for _, n := range []string{"accessKeyId", "secretAccessKey"} {
		if !slices.Contains(names, n) {
			errs = append(errs, fmt.Errorf("aws: credential %s is missing", n))
		}
	}
	return errors.Join(errs...)
}

var _ connector.CredentialsValidator = plugin{}
