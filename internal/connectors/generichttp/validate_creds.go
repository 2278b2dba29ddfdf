package generichttp

import (
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// ValidateCredentials implements connector.CredentialsValidator: every
// credential that a header, query parameter, OAuth 1.0a template or
// credentialValidations entry refers to must be declared by the service, so
// that a typo is found at start-up rather than by the first request. The
// values known at load must match their credentialValidations patterns,
// and headers made of them must hold no line break or NUL (both checked
// again per request).
func (plugin) ValidateCredentials(block []byte, names []string, known connector.CredentialValuesByID) error {
	cfg, err := parseConfig(block)
	if err != nil {
		return err
	}
	data := make(map[string]string, len(names))
	for _, n := range names {
		data[n] = "x"
	}
	var errs []error
	check := func(key string, t *template.Template) {
		if t == nil {
			return
		}
		if _, err := render(t, data); err != nil {
			if strings.Contains(err.Error(), "map has no entry for key") {
				errs = append(errs, fmt.Errorf("config.%s: refers to a credential the service does not declare (it has: %s): %v", key, strings.Join(names, ", "), err))
			} else {
				errs = append(errs, fmt.Errorf("config.%s: %v", key, err))
			}
		}
	}
	for _, h := range cfg.headers {
		check("headers."+h.name, h.t)
	}
	for _, q := range cfg.query {
		check("queryParams."+q.name, q.t)
	}
	if o := cfg.oauth1; o != nil {
		check("oauth1.consumer_key", o.consumerKey)
		check("oauth1.consumer_secret", o.consumerSecret)
		check("oauth1.token", o.token)
		check("oauth1.token_secret", o.tokenSecret)
	}
	for _, v := range cfg.validations {
		if _, ok := data[v.cred]; !ok {
			errs = append(errs, fmt.Errorf("credentialValidations.%s: the service declares no credential %q", v.cred, v.cred))
			continue
		}
		if val, ok := known[v.cred]; ok && !v.re.Match(val) {
			errs = append(errs, fmt.Errorf("credential %s: does not match its credentialValidations pattern%s", v.cred, lineBreakHint(val)))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Headers made of known values (the others stand in as "x").
	for n, v := range known {
		if _, ok := data[n]; ok {
			data[n] = string(v)
		}
	}
	defer clear(data)
	for _, h := range cfg.headers {
		if val, err := render(h.t, data); err == nil && strings.ContainsAny(val, "\r\n\x00") {
			hint := ""
			for n, v := range known {
				if hint = lineBreakHint(v); hint != "" {
					hint = " (credential " + n + hint[len(" (it"):]
					break
				}
			}
			errs = append(errs, fmt.Errorf("config.headers.%s: would contain a line break or NUL%s", h.name, hint))
		}
	}
	return errors.Join(errs...)
}

// lineBreakHint points out a value that ends with a line break, or "".
func lineBreakHint(v []byte) string {
	if n := len(v); n > 0 && v[n-1] == '\n' {
		return " (it ends with a line break: a file written with echo has one; write it with printf '%s')"
	}
	return ""
}

var _ connector.CredentialsValidator = plugin{}
