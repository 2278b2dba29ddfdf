package aws

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/secretless-broker/secretless-broker/internal/typo"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// ValidateCredentials implements connector.CredentialsValidator:
// accessKeyId and secretAccessKey must be declared (accessToken is
// optional), and the values known at load must be ones a signature can
// carry (checked again per request).
func (plugin) ValidateCredentials(_ []byte, names []string, known connector.CredentialValuesByID) error {
	var errs []error
	for _, n := range []string{"accessKeyId", "secretAccessKey"} {
		if !slices.Contains(names, n) {
			errs = append(errs, fmt.Errorf("aws: credential %s is missing", n))
		}
	}
	all := []string{"accessKeyId", "secretAccessKey", "accessToken"}
	for _, n := range names {
		if !slices.Contains(all, n) {
			if meant := typo.Closest(n, all, nil); meant != "" {
				errs = append(errs, fmt.Errorf("credential %s: not an aws credential; did you mean %q?", n, meant))
			}
		}
	}
	for _, n := range all {
		if v, ok := known[n]; ok {
			if err := checkKey(n, v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// checkKey refuses a key that is empty (accessToken may be) or holds a
// line break, NUL or blank, which no AWS key has.
func checkKey(name string, v []byte) error {
	switch {
	case len(v) == 0 && name != "accessToken":
		return fmt.Errorf("credential %s: is empty", name)
	case len(v) > 0 && v[len(v)-1] == '\n':
		return fmt.Errorf("credential %s: ends with a line break (a file written with echo has one; write it with printf '%%s')", name)
	case bytes.ContainsAny(v, "\r\n\x00 \t"):
		return fmt.Errorf("credential %s: holds a line break, NUL or blank, which no AWS key has", name)
	}
	return nil
}

var _ connector.CredentialsValidator = plugin{}
