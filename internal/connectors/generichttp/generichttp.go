// Package generichttp is the built-in generic_http HTTP connector. It adds
// credentials to requests as configured, without code: headers and query
// parameters rendered from text/template templates over the credentials,
// checked by optional per-credential regular expressions, and optionally an
// OAuth 1.0a (HMAC-SHA1, RFC 5849) signature.
//
// Config keys (the proxy-level keys such as authenticateURLsMatching and
// forceSSL are removed by the proxy before the block reaches this package):
//
//	headers:                # header name -> template
//	  Authorization: "Bearer {{ .token }}"
//	  X-Basic: "Basic {{ base64 (printf \"%s:%s\" .username .password) }}"
//	queryParams:            # parameter name -> template
//	  key: "{{ .api_key }}"
//	credentialValidations:  # credential name -> regular expression it must match
//	  token: '^[A-Za-z0-9._-]+$'
//	oauth1:                 # templates; token and token_secret are optional
//	  consumer_key: "{{ .consumer_key }}"
//	  consumer_secret: "{{ .consumer_secret }}"
//	  token: "{{ .token }}"
//	  token_secret: "{{ .token_secret }}"
//
// Templates see each credential as .name (a string) and have the text/template
// built-ins plus base64 (standard encoding, with padding). A template naming
// a credential the service does not have is an error, not an empty string.
// Configured headers replace any header of that name the client sent;
// configured query parameters replace the client's of that name and keep the
// rest of the client's query as it was. The OAuth 1.0a signature is computed
// last, over the final URL (after forceSSL) and query, and over the body when
// it is application/x-www-form-urlencoded (read up to 1 MiB and replayed).
package generichttp

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"go.yaml.in/yaml/v3"

	"github.com/secretless-broker/secretless-broker/internal/connkeys"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

// ID is the connector id services name in "connector:".
const ID = "generic_http"

// Description is a one-line summary for listings.
const Description = "adds headers, query parameters or an OAuth 1.0a signature built from templates over the credentials"

// Plugin returns the connector factory.
func Plugin() sdkhttp.Plugin { return plugin{} }

type plugin struct{}

// rawConfig is the YAML shape of the connector's keys.
type rawConfig struct {
	Headers               map[string]string `yaml:"headers"`
	QueryParams           map[string]string `yaml:"queryParams"`
	CredentialValidations map[string]string `yaml:"credentialValidations"`
	OAuth1                *rawOAuth1        `yaml:"oauth1"`
}

type rawOAuth1 struct {
	ConsumerKey    string `yaml:"consumer_key"`
	ConsumerSecret string `yaml:"consumer_secret"`
	Token          string `yaml:"token"`
	TokenSecret    string `yaml:"token_secret"`
}

type namedTemplate struct {
	name string
	t    *template.Template
}

type validation struct {
	cred string
	re   *regexp.Regexp
}

// config is the parsed, validated form.
type config struct {
	headers     []namedTemplate
	query       []namedTemplate
	validations []validation
	oauth1      *oauth1Templates
}

type oauth1Templates struct {
	consumerKey, consumerSecret, token, tokenSecret *template.Template
}

var funcs = template.FuncMap{
	"base64": func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
}

func parseTemplate(key, text string) (*template.Template, error) {
	t, err := template.New(key).Funcs(funcs).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid template: %s", key, strings.TrimPrefix(err.Error(), "template: "))
	}
	return t, nil
}

var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// hostManaged are headers the proxy sets itself; a template may not set them.
var hostManaged = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Upgrade": true, "Te": true, "Trailer": true, "Keep-Alive": true,
}

func parseConfig(block []byte) (*config, error) {
	var raw rawConfig
	if len(bytes.TrimSpace(block)) > 0 {
		if err := errors.Join(connkeys.Unknown(block, "generic_http", []string{"headers", "queryParams", "oauth1", "credentialValidations"}),
			connkeys.UnknownUnder(block, "oauth1", []string{"consumer_key", "consumer_secret", "token", "token_secret"})); err != nil {
			return nil, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(block))
		dec.KnownFields(true)
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("generic_http config: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
	}
	c := &config{}
	var errs []error
	canonSeen := map[string]string{}
	for _, name := range sortedKeys(raw.Headers) {
		key := "headers." + name
		canon := http.CanonicalHeaderKey(name)
		if other, dup := canonSeen[canon]; dup {
			// HTTP header names ignore case: one would replace the other.
			errs = append(errs, fmt.Errorf("%s: the same header as headers.%s (header names ignore case); keep one", key, other))
			continue
		}
		canonSeen[canon] = name
		switch {
		case !headerName.MatchString(name):
			errs = append(errs, fmt.Errorf("%s: invalid header name", key))
			continue
		case hostManaged[canon] || strings.HasPrefix(canon, "Proxy-"):
			errs = append(errs, fmt.Errorf("%s: the proxy manages this header; it cannot be templated", key))
			continue
		}
		t, err := parseTemplate(key, raw.Headers[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.headers = append(c.headers, namedTemplate{name: canon, t: t})
	}
	for _, name := range sortedKeys(raw.QueryParams) {
		key := "queryParams." + name
		if name == "" {
			errs = append(errs, fmt.Errorf("%s: empty parameter name", key))
			continue
		}
		t, err := parseTemplate(key, raw.QueryParams[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.query = append(c.query, namedTemplate{name: name, t: t})
	}
	for _, cred := range sortedKeys(raw.CredentialValidations) {
		key := "credentialValidations." + cred
		re, err := regexp.Compile(raw.CredentialValidations[cred])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: invalid regex %q: %s", key, raw.CredentialValidations[cred], strings.TrimPrefix(err.Error(), "error parsing regexp: ")))
			continue
		}
		c.validations = append(c.validations, validation{cred: cred, re: re})
	}
	if o := raw.OAuth1; o != nil {
		ot := &oauth1Templates{}
		for _, f := range []struct {
			key, text string
			dst       **template.Template
			required  bool
		}{
			{"oauth1.consumer_key", o.ConsumerKey, &ot.consumerKey, true},
			{"oauth1.consumer_secret", o.ConsumerSecret, &ot.consumerSecret, true},
			{"oauth1.token", o.Token, &ot.token, false},
			{"oauth1.token_secret", o.TokenSecret, &ot.tokenSecret, false},
		} {
			if f.text == "" {
				if f.required {
					errs = append(errs, fmt.Errorf("%s: required", f.key))
				}
				continue
			}
			t, err := parseTemplate(f.key, f.text)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			*f.dst = t
		}
		if (o.Token == "") != (o.TokenSecret == "") {
			errs = append(errs, errors.New("oauth1: token and token_secret go together; set both or neither"))
		}
		if _, ok := canonSeen["Authorization"]; ok {
			errs = append(errs, errors.New("oauth1: the signature is the Authorization header; remove headers.Authorization"))
		}
		c.oauth1 = ot
	}
	if len(errs) == 0 && len(c.headers) == 0 && len(c.query) == 0 && c.oauth1 == nil {
		errs = append(errs, errors.New("generic_http config: set at least one of headers, queryParams or oauth1"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ValidateConfig parses the block and reports every problem, each naming its
// key.
func (plugin) ValidateConfig(block []byte) error {
	_, err := parseConfig(block)
	return err
}

// NewConnector builds the connector. A config that fails to parse (the
// broker validates first, so only when called without ValidateConfig) gives a
// connector that fails every request with that error.
func (plugin) NewConnector(r connector.Resources) sdkhttp.Connector {
	c, err := parseConfig(r.Config())
	if err != nil {
		return sdkhttp.ConnectorFunc(func(*http.Request, connector.CredentialValuesByID) error {
			return fmt.Errorf("generic_http: bad config: %w", err)
		})
	}
	return &genericConnector{cfg: c, oauth: newOAuth1Signer()}
}

type genericConnector struct {
	cfg   *config
	oauth *oauth1Signer
}

func render(t *template.Template, data map[string]string) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		// text/template errors quote the template and the missing key,
		// never a credential value.
		return "", fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "template: "))
	}
	return b.String(), nil
}

// Connect validates the credentials and adds headers, query parameters and
// the OAuth 1.0a signature.
func (g *genericConnector) Connect(r *http.Request, creds connector.CredentialValuesByID) error {
	for _, v := range g.cfg.validations {
		val, ok := creds[v.cred]
		if !ok {
			return fmt.Errorf("generic_http: credential %s named in credentialValidations is missing", v.cred)
		}
		if !v.re.Match(val) {
			return fmt.Errorf("generic_http: credential %s does not match its credentialValidations pattern", v.cred)
		}
	}
	data := make(map[string]string, len(creds))
	for k, v := range creds {
		data[k] = string(v)
	}
	for _, h := range g.cfg.headers {
		val, err := render(h.t, data)
		if err != nil {
			return fmt.Errorf("generic_http: %w", err)
		}
		if strings.ContainsAny(val, "\r\n\x00") {
			hint := ""
			for name, v := range creds {
				if n := len(v); n > 0 && v[n-1] == '\n' {
					hint = fmt.Sprintf(" (credential %s ends with a line break: a file written with echo has one; write it with printf '%%s')", name)
					break
				}
			}
			return fmt.Errorf("generic_http: header %s would contain a line break or NUL%s", h.name, hint)
		}
		r.Header[h.name] = []string{val}
	}
	if len(g.cfg.query) > 0 {
		set := make([][2]string, 0, len(g.cfg.query))
		for _, q := range g.cfg.query {
			val, err := render(q.t, data)
			if err != nil {
				return fmt.Errorf("generic_http: %w", err)
			}
			set = append(set, [2]string{q.name, val})
		}
		r.URL.RawQuery = replaceQueryParams(r.URL.RawQuery, set)
	}
	if o := g.cfg.oauth1; o != nil {
		var k oauth1Keys
		for _, f := range []struct {
			t   *template.Template
			dst *string
		}{{o.consumerKey, &k.consumerKey}, {o.consumerSecret, &k.consumerSecret}, {o.token, &k.token}, {o.tokenSecret, &k.tokenSecret}} {
			if f.t == nil {
				continue
			}
			v, err := render(f.t, data)
			if err != nil {
				return fmt.Errorf("generic_http: %w", err)
			}
			*f.dst = v
		}
		if err := g.oauth.sign(r, k); err != nil {
			return fmt.Errorf("generic_http: oauth1: %w", err)
		}
	}
	return nil
}

// replaceQueryParams drops the client's pairs named in set and appends set,
// leaving every other pair byte for byte as the client wrote it.
func replaceQueryParams(raw string, set [][2]string) string {
	names := make(map[string]bool, len(set))
	for _, kv := range set {
		names[kv[0]] = true
	}
	var b strings.Builder
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		name, _, _ := strings.Cut(pair, "=")
		if dec, err := url.QueryUnescape(name); err == nil && names[dec] {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(pair)
	}
	for _, kv := range set {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(kv[0]))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(kv[1]))
	}
	return b.String()
}

var (
	_ sdkhttp.Plugin    = plugin{}
	_ sdkhttp.Validator = plugin{}
	_ sdkhttp.Connector = (*genericConnector)(nil)
)
