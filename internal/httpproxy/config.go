package httpproxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/secretless-broker/secretless-broker/internal/typo"
)

// Keys of a service's config block that the proxy itself reads. ParseConfig
// removes them before the rest of the block goes to the connector.
const (
	KeyAuthenticateURLsMatching = "authenticateURLsMatching"
	KeyForceSSL                 = "forceSSL"
	KeyCABundle                 = "caBundle"
	KeyAllowWebSockets          = "allowWebSockets"
	KeyTimeouts                 = "timeouts"
	KeyInterceptConnect         = "interceptConnect"
	KeyPassthroughUnmatched     = "passthroughUnmatched"
)

// ProxyKeys lists every proxy-level key, in documentation order.
var ProxyKeys = []string{
	KeyAuthenticateURLsMatching, KeyForceSSL, KeyCABundle, KeyAllowWebSockets,
	KeyTimeouts, KeyInterceptConnect, KeyPassthroughUnmatched,
}

// Default timeouts of a service.
const (
	DefaultDialTimeout           = 10 * time.Second
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultIdleConnTimeout       = 90 * time.Second
	DefaultCredentialTimeout     = 30 * time.Second
)

// Timeouts bound the phases of one proxied request. Zero values take the
// defaults above, except Request, where zero means no limit (a long upload or
// download must be allowed to take its time).
type Timeouts struct {
	Dial           time.Duration // TCP connect to the target
	TLSHandshake   time.Duration // TLS handshake with the target
	ResponseHeader time.Duration // from the end of the request to the response headers
	IdleConn       time.Duration // how long an idle target connection is kept
	Credentials    time.Duration // fetching credentials plus running the connector
	Request        time.Duration // the whole exchange, body included; 0 means none
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Dial, DefaultDialTimeout)
	def(&t.TLSHandshake, DefaultTLSHandshakeTimeout)
	def(&t.ResponseHeader, DefaultResponseHeaderTimeout)
	def(&t.IdleConn, DefaultIdleConnTimeout)
	def(&t.Credentials, DefaultCredentialTimeout)
	return t
}

// Config is the proxy-level part of one HTTP service's config block.
type Config struct {
	// Match holds the compiled authenticateURLsMatching patterns. A request
	// belongs to the service when any pattern matches its absolute URL.
	Match []*regexp.Regexp
	// ForceSSL sends requests to the target over TLS whatever scheme the
	// client used.
	ForceSSL bool
	// CABundle is the path of extra PEM roots trusted for targets, on top of
	// the system roots; "" for none.
	CABundle string
	// RootCAs is the system pool plus CABundle; nil means the system roots.
	RootCAs *x509.CertPool
	// AllowWebSockets lets "Upgrade: websocket" requests through.
	AllowWebSockets bool
	Timeouts        Timeouts
	// Intercept is the CA that terminates CONNECT tunnels; nil when the
	// service does not set interceptConnect.
	Intercept *InterceptCA
	// PassthroughUnmatched lets requests that match no service through
	// without credentials. It applies to the whole listener.
	PassthroughUnmatched bool
	// Warnings are patterns that probably match more than meant (see
	// LoosePattern), to be logged at load time.
	Warnings []string
}

// InterceptCA is a CA certificate and key that applications trust, used to
// issue certificates for the hosts they CONNECT to.
type InterceptCA struct {
	CertFile, KeyFile string
	Cert              tls.Certificate // Leaf is set
}

// KeyError is a config problem at one key of the block.
type KeyError struct {
	Key string // dotted path inside the config block, e.g. "timeouts.dial"
	Msg string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Msg }

func keyErrf(key, format string, args ...any) *KeyError {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// ParseConfig reads the proxy-level keys of a service's config block (YAML
// bytes, nil when the service has none) and returns them with the rest of the
// block re-encoded as YAML, for the connector's ValidateConfig and
// NewConnector (nil when nothing is left). Every problem found is returned,
// joined; each names its key. With problems, the connector's keys are still
// returned (for its own checks), with no Config.
func ParseConfig(block []byte) (*Config, []byte, error) {
	cfg := &Config{}
	var root yaml.Node
	if len(bytes.TrimSpace(block)) > 0 {
		if err := yaml.Unmarshal(block, &root); err != nil {
			return nil, nil, fmt.Errorf("config: %w", err)
		}
	}
	n := &root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return nil, nil, &KeyError{Key: KeyAuthenticateURLsMatching, Msg: "required: list the URL patterns (regular expressions) this service adds credentials to"}
	}
	if n.Kind != yaml.MappingNode {
		return nil, nil, errors.New("config: must be a mapping")
	}
	var errs []error
	rest := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	seen, typoed := map[string]bool{}, map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			errs = append(errs, keyErrf(k.Value, "appears twice"))
			continue
		}
		seen[k.Value] = true
		var err error
		switch k.Value {
		case KeyAuthenticateURLsMatching:
			cfg.Match, err = parsePatterns(v)
			for _, re := range cfg.Match {
				if why := LoosePattern(re.String()); why != "" {
					cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("authenticateURLsMatching %q: %s", re.String(), why))
				}
			}
		case KeyForceSSL:
			cfg.ForceSSL, err = parseBool(k.Value, v)
		case KeyAllowWebSockets:
			cfg.AllowWebSockets, err = parseBool(k.Value, v)
		case KeyPassthroughUnmatched:
			cfg.PassthroughUnmatched, err = parseBool(k.Value, v)
		case KeyCABundle:
			cfg.CABundle, cfg.RootCAs, err = parseCABundle(v)
		case KeyTimeouts:
			cfg.Timeouts, err = parseTimeouts(v)
		case KeyInterceptConnect:
			cfg.Intercept, err = parseIntercept(v)
		default:
			// A typo of a proxy key is the proxy's to report: the connector
			// would call it unknown, and the key meant "missing".
			if meant := typo.Closest(k.Value, proxyKeys, nil); meant != "" {
				err = keyErrf(k.Value, "unknown key; did you mean %q?", meant)
				typoed[meant] = true
				break
			}
			rest.Content = append(rest.Content, k, v)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if !seen[KeyAuthenticateURLsMatching] && !typoed[KeyAuthenticateURLsMatching] {
		errs = append(errs, &KeyError{Key: KeyAuthenticateURLsMatching, Msg: "required: list the URL patterns (regular expressions) this service adds credentials to"})
	}
	var restBytes []byte
	if len(rest.Content) > 0 {
		b, err := yaml.Marshal(rest)
		if err != nil {
			return nil, nil, fmt.Errorf("config: re-encode connector keys: %w", err)
		}
		restBytes = b
	}
	if len(errs) > 0 {
		// The connector's keys come back too, so that its problems are
		// reported with the proxy's in one go.
		return nil, restBytes, errors.Join(errs...)
	}
	return cfg, restBytes, nil
}

// proxyKeys are the keys ParseConfig takes.
var proxyKeys = []string{KeyAuthenticateURLsMatching, KeyForceSSL, KeyAllowWebSockets, KeyPassthroughUnmatched, KeyCABundle, KeyTimeouts, KeyInterceptConnect}

// hostStart is what an anchored URL pattern starts with: optional flags, ^
// and a scheme.
var hostStart = regexp.MustCompile(`^(\(\?[a-zA-Z]+\))?\^\(?(https?|https\?|http\|https|https\|http)\)?(:|\\:)(//|\\/\\/)`)

// literalHost is a host name written literally (dots escaped), or an
// escaped IPv6 literal.
var literalHost = regexp.MustCompile(`^(?:(?:[A-Za-z0-9-]|\\\.)+|\\\[[0-9A-Fa-f:.]+\\\])$`)

// literalDomain: a host expression that ends with a literal domain
// (example\.com) that starts the host or follows an escaped dot, also one
// closing a repeated subdomain group ("([a-z]+\.)*example\.com"), so that
// nothing can be glued to its front.
var literalDomain = regexp.MustCompile(`(?:^|\\\.|\\\.\)[*?+])[A-Za-z0-9-]+(?:\\\.[A-Za-z0-9-]+)+$`)

// portSuffix is a port written after the host: a number, any digits, an
// optional port group, or a bare colon (any port).
var portSuffix = regexp.MustCompile(`(?::(?:\d+|\\d\+|\[0-9\]\+)|\(:(?:\d+|\\d\+|\[0-9\]\+)\)\?|:)$`)

// LoosePattern says why an authenticateURLsMatching pattern probably lets
// a client steer the credentials to a URL nobody meant, or "". Each
// alternative must start with ^ and the scheme (unanchored, a pattern
// matches anywhere, the query string included: http://evil/?http://api/),
// name the host literally, or as a fixed domain with a subdomain pattern in
// front (an unescaped dot or a negated class matches other hosts, and may
// run into the path), and follow it with "/", "$" or a port (else
// ^https://api\.example\.com matches api.example.com.evil.example).
func LoosePattern(p string) string {
	return loosePattern(spellPlainly(p), 4)
}

// spellPlainly rewrites the spellings of a pattern that mean the same as
// the plain forms the checks look for: \/ and \x2f as /, [.] and \x2e as
// \., \z as $, http(s)? and http(?:s)? as https?, and a scheme in capitals
// after (?i). Only the check sees the result.
func spellPlainly(p string) string {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case strings.HasPrefix(p[i:], `\Q`):
			b.WriteString(p[i:]) // quoted text is left as it is, and all after it
			i = len(p)
		case c == '\\' && i+1 < len(p):
			rest := p[i+1:]
			switch {
			case rest[0] == '/':
				b.WriteByte('/')
				i++
			case rest[0] == 'z':
				b.WriteByte('$')
				i++
			case len(rest) >= 3 && (rest[:3] == "x2e" || rest[:3] == "x2E"):
				b.WriteString(`\.`)
				i += 3
			case len(rest) >= 3 && (rest[:3] == "x2f" || rest[:3] == "x2F"):
				b.WriteByte('/')
				i += 3
			default:
				b.WriteByte(c)
				b.WriteByte(rest[0])
				i++
			}
		case !inClass && strings.HasPrefix(p[i:], "[.]"):
			b.WriteString(`\.`)
			i += 2
		default:
			switch {
			case c == '[' && !inClass:
				inClass = true
				b.WriteByte(c)
				if i+1 < len(p) && p[i+1] == ']' { // []...] holds a ]
					b.WriteByte(']')
					i++
				}
				continue
			case c == ']' && inClass:
				inClass = false
			}
			b.WriteByte(c)
		}
	}
	out := b.String()
	for _, form := range []string{"http(s)?", "http(?:s)?"} {
		out = strings.ReplaceAll(out, form, "https?")
	}
	if strings.HasPrefix(out, "(?i)") {
		for _, scheme := range []string{"^HTTPS?://", "^HTTPS://", "^HTTP://"} {
			if rest, ok := cutPrefixFold(out[len("(?i)"):], scheme); ok {
				out = "(?i)" + strings.ToLower(scheme) + rest
				break
			}
		}
	}
	return out
}

// cutPrefixFold is strings.CutPrefix without regard to letter case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

func loosePattern(p string, depth int) string {
	for _, alt := range topLevelAlternatives(p) {
		// ^(A|B)rest is ^Arest or ^Brest: each branch is checked.
		if branches := leadingGroupBranches(alt); branches != nil && depth > 0 {
			for _, b := range branches {
				if why := loosePattern(b, depth-1); why != "" {
					return why
				}
			}
			continue
		}
		if why := looseAlternative(alt); why != "" {
			return why
		}
	}
	return ""
}

// anchorPrefix is what may come before a pattern's leading group: flags
// and ^.
var anchorPrefix = regexp.MustCompile(`^(\(\?[a-zA-Z]+\))?\^`)

// leadingGroupBranches turns ^(A|B)rest into ^Arest and ^Brest, or nil
// when the pattern does not start with a group of alternatives. A group
// made optional or repeated also gives the branch without it.
func leadingGroupBranches(p string) []string {
	m := anchorPrefix.FindStringIndex(p)
	if m == nil || !strings.HasPrefix(p[m[1]:], "(") {
		return nil
	}
	start := m[1]
	end := -1
	scanPattern(p[start:], func(i int, c byte, depth int) bool {
		if c == ')' && depth == 1 {
			end = start + i
			return false
		}
		return true
	})
	if end < 0 {
		return nil
	}
	inner := p[start+1 : end]
	if strings.HasPrefix(inner, "?") {
		if !strings.HasPrefix(inner, "?:") {
			return nil // a flag group or a named one: left to the checks as it is
		}
		inner = inner[2:]
	}
	alts := topLevelAlternatives(inner)
	rest := p[end+1:]
	optional := rest != "" && strings.ContainsAny(rest[:1], "?*{")
	if len(alts) < 2 && !optional {
		return nil
	}
	if optional || strings.HasPrefix(rest, "+") {
		return []string{"(repeated or optional leading group)"}
	}
	out := make([]string, len(alts))
	for i, a := range alts {
		out[i] = p[:start] + a + rest
	}
	return out
}

func looseAlternative(p string) string {
	m := hostStart.FindStringIndex(p)
	if m == nil {
		return "it is not anchored as ^scheme://host/...: it can match anywhere in the URL, the query string included"
	}
	host, terminated := hostPart(p[m[1]:])
	bare := portSuffix.ReplaceAllString(host, "")
	if !terminated && !strings.HasSuffix(host, ":") {
		return "the host is not followed by /, $ or a port: it also matches longer host names"
	}
	if wildcardDot(bare) || strings.Contains(bare, "[^") {
		return "the host has an unescaped dot or a negated class: it can match other hosts"
	}
	if hostCanLeave(bare) {
		return `the host has a class or escape that matches "/", "?", "#", "@" or "\\" (such as \S or \W): it can match other hosts, with the host meant moved into the path or query`
	}
	if !literalHost.MatchString(bare) && !literalDomain.MatchString(bare) {
		return "the host does not end with a literal domain (with dots escaped): it can match other hosts"
	}
	if !literalHost.MatchString(bare) && !subdomainGroupEndsWithDot(bare) {
		return `a branch of the group before the domain does not end with "\.": it glues a name to the front of the domain (evilexample.com)`
	}
	return ""
}

// subdomainGroupEndsWithDot reports, for a host expression that ends with
// a repeated group and a literal domain ("([a-z]+\.)*example\.com"),
// whether every branch of that group ends with an escaped dot; true when
// the domain follows no such group.
func subdomainGroupEndsWithDot(host string) bool {
	m := literalDomain.FindStringIndex(host)
	if m == nil || !strings.HasPrefix(host[m[0]:], `\.)`) {
		return true
	}
	closeAt := m[0] + 2
	open := -1
	var stack []int
	scanPattern(host[:closeAt+1], func(i int, c byte, _ int) bool {
		switch c {
		case '(':
			stack = append(stack, i)
		case ')':
			if len(stack) > 0 {
				if i == closeAt {
					open = stack[len(stack)-1]
				}
				stack = stack[:len(stack)-1]
			}
		}
		return true
	})
	if open < 0 {
		return false
	}
	inner := strings.TrimPrefix(host[open+1:closeAt], "?:")
	for _, alt := range topLevelAlternatives(inner) {
		if !strings.HasSuffix(alt, `\.`) || strings.HasSuffix(alt, `\\.`) {
			return false
		}
	}
	return true
}

// scanPattern calls fn with the index, byte and group depth of each byte of
// the regular expression p that is neither escaped nor inside a character
// class (the "[" that opens one included), until fn returns false. A "("
// or ")" is seen at the depth outside it.
func scanPattern(p string, fn func(i int, c byte, depth int) bool) {
	depth, inClass := 0, false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\' && i+1 < len(p) && p[i+1] == 'Q':
			// \Q...\E quotes everything up to \E (or the end).
			if e := strings.Index(p[i+2:], `\E`); e >= 0 {
				i += 2 + e + 1
			} else {
				i = len(p)
			}
			continue
		case c == '\\':
			i++
			continue
		case inClass:
			inClass = c != ']'
			continue
		}
		if !fn(i, c, depth) {
			return
		}
		switch c {
		case '[':
			inClass = true
		case '(':
			depth++
		case ')':
			depth--
		}
	}
}

// hostPart is p up to its first "/" or "$" outside groups and classes (or
// a trailing (/|$) group), and whether there was one that must match: a
// "/" made optional ("/?", "/*", "/{0,1}") ends nothing.
func hostPart(p string) (string, bool) {
	end, found := len(p), false
	scanPattern(p, func(i int, c byte, depth int) bool {
		rest := p[i:]
		if (c == '(' && (strings.HasPrefix(rest, "(/|$)") || strings.HasPrefix(rest, "($|/)"))) ||
			((c == '/' || c == '$') && depth == 0) {
			end = i
			next := rest[1:]
			if c == '(' {
				next = rest[len("(/|$)"):]
			}
			found = !(strings.HasPrefix(next, "?") || strings.HasPrefix(next, "*") || strings.HasPrefix(next, "{0"))
			return false
		}
		return true
	})
	return p[:end], found
}

// hostCanLeave reports whether a host expression has a part that can match
// a character that ends a URL's host ("/", "?", "#"), starts it anew after
// userinfo ("@"), or that some clients take for "/" ("\"): then a client
// can put another host in front and the host meant after it.
func hostCanLeave(host string) bool {
	re, err := syntax.Parse(host, syntax.Perl)
	if err != nil {
		return true
	}
	var walk func(*syntax.Regexp) bool
	walk = func(r *syntax.Regexp) bool {
		switch r.Op {
		case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
			return true
		case syntax.OpCharClass:
			for i := 0; i+1 < len(r.Rune); i += 2 {
				for _, c := range "/?#@\\" {
					if r.Rune[i] <= c && c <= r.Rune[i+1] {
						return true
					}
				}
			}
		case syntax.OpLiteral:
			return strings.ContainsAny(string(r.Rune), "/?#@\\")
		}
		for _, sub := range r.Sub {
			if walk(sub) {
				return true
			}
		}
		return false
	}
	return walk(re)
}

// wildcardDot reports whether the expression has a "." that is neither
// escaped nor inside a character class.
func wildcardDot(p string) bool {
	found := false
	scanPattern(p, func(_ int, c byte, _ int) bool {
		found = c == '.'
		return !found
	})
	return found
}

// topLevelAlternatives splits p at the | that are outside groups and
// character classes.
func topLevelAlternatives(p string) []string {
	var out []string
	start := 0
	scanPattern(p, func(i int, c byte, depth int) bool {
		if c == '|' && depth == 0 {
			out = append(out, p[start:i])
			start = i + 1
		}
		return true
	})
	return append(out, p[start:])
}

func parsePatterns(v *yaml.Node) ([]*regexp.Regexp, error) {
	key := KeyAuthenticateURLsMatching
	var items []*yaml.Node
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return nil, keyErrf(key, "must be a regular expression or a list of them")
		}
		items = []*yaml.Node{v}
	case yaml.SequenceNode:
		items = v.Content
	default:
		return nil, keyErrf(key, "must be a regular expression or a list of them")
	}
	if len(items) == 0 {
		return nil, keyErrf(key, "must list at least one pattern")
	}
	var out []*regexp.Regexp
	var errs []error
	for i, it := range items {
		ikey := key
		if v.Kind == yaml.SequenceNode {
			ikey = fmt.Sprintf("%s[%d]", key, i)
		}
		if it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
			errs = append(errs, keyErrf(ikey, "must be a string"))
			continue
		}
		if it.Value == "" {
			errs = append(errs, keyErrf(ikey, "empty pattern would match every URL; write ^ to mean that"))
			continue
		}
		re, err := regexp.Compile(it.Value)
		if err != nil {
			errs = append(errs, keyErrf(ikey, "invalid regex %q: %s", it.Value, strings.TrimPrefix(err.Error(), "error parsing regexp: ")))
			continue
		}
		out = append(out, re)
	}
	return out, errors.Join(errs...)
}

func parseBool(key string, v *yaml.Node) (bool, error) {
	if v.Kind == yaml.ScalarNode {
		switch strings.ToLower(v.Value) {
		case "true", "yes", "on":
			return true, nil
		case "false", "no", "off":
			return false, nil
		}
	}
	return false, keyErrf(key, "must be true or false, not %q", v.Value)
}

func parseCABundle(v *yaml.Node) (string, *x509.CertPool, error) {
	if v.Kind != yaml.ScalarNode || v.Value == "" {
		return "", nil, keyErrf(KeyCABundle, "must be the path of a PEM file of CA certificates")
	}
	pem, err := os.ReadFile(v.Value)
	if err != nil {
		return "", nil, keyErrf(KeyCABundle, "%v", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return "", nil, keyErrf(KeyCABundle, "%s holds no PEM certificate", v.Value)
	}
	return v.Value, pool, nil
}

func parseTimeouts(v *yaml.Node) (Timeouts, error) {
	var t Timeouts
	if v.Kind != yaml.MappingNode {
		return t, keyErrf(KeyTimeouts, "must be a mapping of dial, tlsHandshake, responseHeader, idleConn, credentials, request to durations like 30s")
	}
	fields := map[string]*time.Duration{
		"dial": &t.Dial, "tlsHandshake": &t.TLSHandshake, "responseHeader": &t.ResponseHeader,
		"idleConn": &t.IdleConn, "credentials": &t.Credentials, "request": &t.Request,
	}
	var errs []error
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		key := KeyTimeouts + "." + k.Value
		p, ok := fields[k.Value]
		if !ok {
			errs = append(errs, keyErrf(key, "unknown timeout (known: credentials, dial, idleConn, request, responseHeader, tlsHandshake)"))
			continue
		}
		d, err := parseDuration(val.Value)
		if err != nil || val.Kind != yaml.ScalarNode {
			errs = append(errs, keyErrf(key, "invalid duration %q: write it like 500ms, 30s or 2m", val.Value))
			continue
		}
		*p = d
	}
	return t, errors.Join(errs...)
}

func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil && n == 0 {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		return 0, errors.New("negative")
	}
	return d, err
}

func parseIntercept(v *yaml.Node) (*InterceptCA, error) {
	key := KeyInterceptConnect
	if v.Kind != yaml.MappingNode {
		return nil, keyErrf(key, "must be a mapping with caCert and caKey (PEM file paths)")
	}
	ic := &InterceptCA{}
	var errs []error
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		switch k.Value {
		case "caCert":
			ic.CertFile = val.Value
		case "caKey":
			ic.KeyFile = val.Value
		default:
			errs = append(errs, keyErrf(key+"."+k.Value, "unknown key (known: caCert, caKey)"))
		}
	}
	if ic.CertFile == "" {
		errs = append(errs, keyErrf(key+".caCert", "required"))
	}
	if ic.KeyFile == "" {
		errs = append(errs, keyErrf(key+".caKey", "required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cert, err := tls.LoadX509KeyPair(ic.CertFile, ic.KeyFile)
	if err != nil {
		return nil, keyErrf(key, "load CA: %v", err)
	}
	leaf := cert.Leaf
	if !leaf.IsCA {
		return nil, keyErrf(key+".caCert", "%s is not a CA certificate (basicConstraints CA:TRUE is required)", ic.CertFile)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, keyErrf(key+".caCert", "%s may not sign certificates (its keyUsage lacks keyCertSign)", ic.CertFile)
	}
	// The certificates it signs are checked against it by the clients: an
	// expired CA fails every intercepted connection.
	if now := time.Now(); now.After(leaf.NotAfter) {
		return nil, keyErrf(key+".caCert", "%s expired on %s", ic.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	} else if now.Before(leaf.NotBefore) {
		return nil, keyErrf(key+".caCert", "%s is not valid before %s", ic.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	ic.Cert = cert
	return ic, nil
}

// Route builds the route of a service from its parsed config.
func (c *Config) Route(service string, conn Connector, fetch FetchFunc) Route {
	return Route{
		Service: service, Match: c.Match, ForceSSL: c.ForceSSL, RootCAs: c.RootCAs,
		AllowWebSockets: c.AllowWebSockets, Timeouts: c.Timeouts,
		Connector: conn, Fetch: fetch,
	}
}

// ListenerOptions merges the listener-wide keys of the services that share
// one listenOn address: interceptConnect (every service that sets it must
// name the same files) and passthroughUnmatched (any service turns it on).
func ListenerOptions(cfgs ...*Config) (Options, error) {
	var o Options
	for _, c := range cfgs {
		if c == nil {
			continue
		}
		if c.PassthroughUnmatched {
			o.PassthroughUnmatched = true
		}
		if c.Intercept != nil {
			if o.Intercept != nil && (o.Intercept.CertFile != c.Intercept.CertFile || o.Intercept.KeyFile != c.Intercept.KeyFile) {
				return Options{}, keyErrf(KeyInterceptConnect, "services sharing a listenOn address name different CAs (%s and %s)", o.Intercept.CertFile, c.Intercept.CertFile)
			}
			o.Intercept = c.Intercept
		}
	}
	return o, nil
}
