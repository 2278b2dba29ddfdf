package pg

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// Credential names. Any other credential is sent to the server as a startup
// parameter.
const (
	credHost        = "host"
	credPort        = "port"
	credUsername    = "username"
	credPassword    = "password"
	credDatabase    = "database"
	credSSLMode     = "sslmode"
	credSSLRootCert = "sslrootcert"
	credSSLCert     = "sslcert"
	credSSLKey      = "sslkey"
	credSSLHost     = "sslhost"

	defaultPort    = "5432"
	defaultSSLMode = sslRequire
)

var knownCredentials = map[string]bool{
	credHost: true, credPort: true, credUsername: true, credPassword: true,
	credDatabase: true, credSSLMode: true, credSSLRootCert: true,
	credSSLCert: true, credSSLKey: true, credSSLHost: true,
}

// sslMode is libpq's sslmode.
type sslMode string

const (
	sslDisable    sslMode = "disable"
	sslAllow      sslMode = "allow"
	sslPrefer     sslMode = "prefer"
	sslRequire    sslMode = "require"
	sslVerifyCA   sslMode = "verify-ca"
	sslVerifyFull sslMode = "verify-full"
)

// target is what one connection needs to know about the server, built from
// the credentials of that connection.
type target struct {
	network  string // "tcp" or "unix"
	addr     string
	username string
	password []byte // aliases the credential: valid only during Connect
	database string // "" when the credentials do not fix one
	extra    []param
	sslmode  sslMode
	// sslmodeSet: the credentials give sslmode (else it is the default).
	sslmodeSet bool
	tlsConf    *tls.Config // nil when TLS is never attempted
}

// libpqOnly names libpq connection options that are not PostgreSQL startup
// parameters: sent as one, each would make every login fail (42704
// unrecognized configuration parameter). The value says what to do instead.
var libpqOnly = map[string]string{
	"dbname":                    "use the database credential",
	"hostaddr":                  "give the address as host",
	"passfile":                  "give the password as the password credential",
	"channel_binding":           "the connector uses SCRAM-SHA-256-PLUS whenever the server offers it over TLS",
	"connect_timeout":           "use connectTimeout in the service's config block",
	"target_session_attrs":      "not supported: give the host of the server you want",
	"load_balance_hosts":        "not supported: give one host",
	"fallback_application_name": "the client's application_name is forwarded; set application_name to fix one",
	"sslpassword":               "encrypted client keys are not supported: give sslkey unencrypted",
	"sslcrl":                    "not supported",
	"sslcrldir":                 "not supported",
	"sslcompression":            "not supported",
	"sslsni":                    "not supported: the connector always sends SNI for a host name",
	"sslnegotiation":            "not supported: the connector negotiates TLS with an SSLRequest",
	"ssl_min_protocol_version":  "not supported: the connector uses TLS 1.2 or later",
	"ssl_max_protocol_version":  "not supported",
	"gssencmode":                "GSSAPI is not supported",
	"krbsrvname":                "GSSAPI is not supported",
	"gsslib":                    "GSSAPI is not supported",
	"gssdelegation":             "GSSAPI is not supported",
	"requirepeer":               "not supported",
	"require_auth":              "not supported",
	"service":                   "not supported: give the connection settings as credentials",
	"keepalives":                "the broker keeps TCP keepalives on",
	"keepalives_idle":           "the broker sets TCP keepalives itself",
	"keepalives_interval":       "the broker sets TCP keepalives itself",
	"keepalives_count":          "the broker sets TCP keepalives itself",
	"tcp_user_timeout":          "not supported",
}

func credErr(name, format string, args ...any) error {
	return fmt.Errorf("%w: credential %s: %s", ErrConfig, name, fmt.Sprintf(format, args...))
}

// parseCredentials validates one connection's credentials. Error messages
// name credentials but never include their values.
func parseCredentials(creds connector.CredentialValuesByID) (*target, error) {
	host := strings.TrimSpace(string(creds[credHost]))
	if host == "" {
		return nil, credErr(credHost, "missing")
	}
	if err := checkHost(host); err != nil {
		return nil, err
	}
	port := strings.TrimSpace(string(creds[credPort]))
	if port == "" {
		port = defaultPort
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, credErr(credPort, "not a port number")
	}
	user := string(creds[credUsername])
	if user == "" {
		return nil, credErr(credUsername, "missing")
	}
	for _, n := range []string{credUsername, credDatabase} {
		if strings.IndexByte(string(creds[n]), 0) >= 0 {
			return nil, credErr(n, "contains a NUL byte")
		}
	}
	t := &target{
		username: user,
		password: creds[credPassword],
		database: string(creds[credDatabase]),
		sslmode:  defaultSSLMode,
	}
	systemRoots := strings.TrimSpace(string(creds[credSSLRootCert])) == "system"
	if systemRoots {
		// As libpq 16: the system roots trust certificates for every
		// public name, so only a name check makes them mean anything.
		t.sslmode = sslVerifyFull
	}
	if m := strings.TrimSpace(string(creds[credSSLMode])); m != "" {
		t.sslmode, t.sslmodeSet = sslMode(m), true
	}
	switch t.sslmode {
	case sslDisable, sslAllow, sslPrefer, sslRequire, sslVerifyCA, sslVerifyFull:
	default:
		return nil, credErr(credSSLMode, "must be one of disable, allow, prefer, require, verify-ca, verify-full")
	}
	if systemRoots && t.sslmode != sslVerifyFull {
		return nil, credErr(credSSLMode, "weak sslmode %q may not be used with sslrootcert system (use verify-full, the default with system roots)", string(t.sslmode))
	}
	if strings.HasPrefix(host, "/") {
		// A unix socket directory, as in libpq. libpq never uses TLS on
		// unix sockets, whatever sslmode says, and neither do we.
		t.network, t.addr = "unix", host+"/.s.PGSQL."+port
		t.sslmode = sslDisable
	} else {
		t.network, t.addr = "tcp", net.JoinHostPort(host, port)
	}
	for name, v := range creds {
		if name == "user" {
			return nil, credErr(name, "not allowed: the login role comes from the username credential")
		}
		if why, ok := libpqOnly[name]; ok {
			return nil, credErr(name, "not allowed: a libpq connection option, not a startup parameter; %s", why)
		}
		if !knownCredentials[name] {
			if strings.IndexByte(name, 0) >= 0 || strings.IndexByte(string(v), 0) >= 0 {
				return nil, credErr(name, "contains a NUL byte")
			}
			t.extra = append(t.extra, param{key: name, value: string(v)})
		}
	}
	if t.sslmode != sslDisable {
		conf, err := targetTLSConfig(t.sslmode, host, creds)
		if err != nil {
			return nil, err
		}
		t.tlsConf = conf
	}
	return t, nil
}

// checkHost refuses host values that libpq would take differently (several
// hosts, a host:port pair) or that cannot name a server (a relative path).
func checkHost(host string) error {
	switch {
	case strings.IndexByte(host, 0) >= 0:
		return credErr(credHost, "contains a NUL byte")
	case strings.Contains(host, ","):
		return credErr(credHost, "lists several hosts; give one")
	case strings.HasPrefix(host, "/"):
		return nil // a unix socket directory
	case strings.Contains(host, "/"):
		return credErr(credHost, "a unix socket directory must be an absolute path")
	case strings.HasPrefix(host, "["):
		return credErr(credHost, "write an IPv6 address without brackets (the port goes in the port credential)")
	}
	if _, p, err := net.SplitHostPort(host); err == nil && p != "" {
		return credErr(credHost, "has a port; give it as the port credential")
	}
	return nil
}

// targetTLSConfig implements libpq's sslmode semantics:
//
//   - allow, prefer, require: encrypt; the certificate chain is verified
//     only when sslrootcert is given (as libpq does when a root certificate
//     file exists), the host name never;
//   - verify-ca: verify the chain against sslrootcert (the system roots
//     when it is not given);
//   - verify-full: verify the chain and that the certificate names sslhost,
//     or host when sslhost is not given (see verifyName).
//
// sslrootcert "system" selects the system's root certificates, and then
// only verify-full (the default with it) is allowed.
func targetTLSConfig(mode sslMode, host string, creds connector.CredentialValuesByID) (*tls.Config, error) {
	name := strings.TrimSpace(string(creds[credSSLHost]))
	if name == "" {
		name = host
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name}

	var roots *x509.CertPool
	rootGiven := len(creds[credSSLRootCert]) > 0
	if rootGiven {
		v := strings.TrimSpace(string(creds[credSSLRootCert]))
		if v == "system" {
			pool, err := x509.SystemCertPool()
			if err != nil {
				return nil, credErr(credSSLRootCert, "system roots: %v", err)
			}
			roots = pool
		} else {
			pemBytes, err := pemOrFile(creds[credSSLRootCert])
			if err != nil {
				return nil, credErr(credSSLRootCert, "%v", err)
			}
			roots = x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pemBytes) {
				return nil, credErr(credSSLRootCert, "no certificate found in the PEM data")
			}
		}
	}

	certGiven, keyGiven := len(creds[credSSLCert]) > 0, len(creds[credSSLKey]) > 0
	switch {
	case certGiven && keyGiven:
		certPEM, err := pemOrFile(creds[credSSLCert])
		if err != nil {
			return nil, credErr(credSSLCert, "%v", err)
		}
		keyPEM, err := pemOrFile(creds[credSSLKey])
		if err != nil {
			return nil, credErr(credSSLKey, "%v", err)
		}
		if encryptedKey(keyPEM) {
			clear(keyPEM)
			return nil, credErr(credSSLKey, "%s", errEncryptedKey)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		clear(keyPEM)
		if err != nil {
			return nil, credErr(credSSLCert, "with sslkey: %v", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	case certGiven:
		return nil, credErr(credSSLKey, "missing (sslcert is set)")
	case keyGiven:
		return nil, credErr(credSSLCert, "missing (sslkey is set)")
	}

	switch {
	case mode == sslVerifyFull:
		// The chain and the name are checked below, the name as libpq
		// checks it (crypto/tls no longer looks at the Common Name).
		conf.InsecureSkipVerify = true
		conf.VerifyConnection = verifyFull(roots, name)
	case mode == sslVerifyCA || rootGiven:
		conf.InsecureSkipVerify = true // the chain is checked below, the name is not
		conf.VerifyConnection = verifyChain(roots)
	default:
		conf.InsecureSkipVerify = true
	}
	return conf, nil
}

// verifyChain verifies the server's certificate chain without checking its
// name (sslmode verify-ca).
func verifyChain(roots *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("server sent no certificate")
		}
		opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(opts)
		return err
	}
}

// verifyFull verifies the chain and then the server's name (sslmode
// verify-full).
func verifyFull(roots *x509.CertPool, name string) func(tls.ConnectionState) error {
	chain := verifyChain(roots)
	return func(cs tls.ConnectionState) error {
		if err := chain(cs); err != nil {
			return err
		}
		return verifyName(cs.PeerCertificates[0], name)
	}
}

// verifyName checks that cert is for host as libpq does. host is an IP
// address when it parses as one, else a DNS name. Each DNS name among the
// subject alternative names is compared with host as text, without regard to
// case, where a leading "*." matches exactly one label ("*.example.com"
// matches "db.example.com", neither "example.com" nor "a.db.example.com");
// each IP address among them is compared with host when host is an address
// of the same family. Only when the certificate has no alternative name of
// host's own kind (no IP address for an address, no DNS name for a name) is
// its Common Name compared, as a DNS name is.
func verifyName(cert *x509.Certificate, host string) error {
	hostIP := parseHostIP(host)
	for _, d := range cert.DNSNames {
		if namesMatch(d, host) {
			return nil
		}
	}
	for _, ip := range cert.IPAddresses {
		if hostIP != nil && len(ip) == len(hostIP) && ip.Equal(hostIP) {
			return nil
		}
	}
	kind, own := "DNS names", len(cert.DNSNames) > 0
	if hostIP != nil {
		kind, own = "IP addresses", len(cert.IPAddresses) > 0
	}
	var names []string
	names = append(names, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	cn := cert.Subject.CommonName
	if !own && cn != "" {
		if namesMatch(cn, host) {
			return nil
		}
		also := ""
		if len(names) > 0 {
			also = " and for " + strings.Join(names, ", ")
		}
		return nameError{fmt.Sprintf("x509: certificate is for %q (its Common Name; it has no %s)%s, not %s", cn, kind, also, host)}
	}
	if len(names) == 0 {
		return nameError{"x509: certificate names no host, not " + host}
	}
	return nameError{fmt.Sprintf("x509: certificate is valid for %s, not %s", strings.Join(names, ", "), host)}
}

// parseHostIP is host as an IP address, 4 bytes for IPv4 and 16 for IPv6
// (the lengths of a certificate's addresses), or nil when it is a name.
func parseHostIP(host string) net.IP {
	ip := net.ParseIP(host)
	if ip == nil {
		return nil
	}
	if !strings.Contains(host, ":") {
		return ip.To4()
	}
	return ip.To16()
}

// revealsPassword reports whether a value the server sends during the
// startup shows the password (see showsSecret): a user named like its
// password, as in many a development setup, shows in session_authorization.
func (t *target) revealsPassword(v string) bool {
	return showsSecret([]byte(v), t.password, []byte(t.username), []byte(t.database))
}

// showsSecret reports whether b holds secret (4 bytes or longer; shorter
// ones would match ordinary text) anywhere but inside one of the public
// names, which the client sees anyway: the user and database of the
// session. With user and password both "postgres", the server's `password
// authentication failed for user "postgres"` shows no secret; the same
// text with the password beside the name does.
func showsSecret(b, secret []byte, public ...[]byte) bool {
	if len(secret) < 4 || !bytes.Contains(b, secret) {
		return false
	}
	for _, p := range public {
		if len(p) > 0 && bytes.Contains(p, secret) {
			// A NUL keeps what was on either side of the name apart.
			b = bytes.ReplaceAll(b, p, []byte{0})
		}
	}
	return bytes.Contains(b, secret)
}

// nameError is verifyName's refusal.
type nameError struct{ msg string }

func (e nameError) Error() string { return e.msg }

// namesMatch compares a certificate's name with host: equal without regard
// to case, or a "*." wildcard covering host's first label.
func namesMatch(cn, host string) bool {
	if strings.IndexByte(cn, 0) >= 0 {
		return false // a NUL would hide the rest of the name
	}
	if strings.EqualFold(cn, host) {
		return true
	}
	if len(cn) > 2 && strings.HasPrefix(cn, "*.") {
		if i := strings.IndexByte(host, '.'); i > 0 && strings.EqualFold(cn[1:], host[i:]) {
			return true
		}
	}
	return false
}

// cancelTLSConfig is the TLS configuration for forwarding a CancelRequest
// after the session's credentials are gone: the same verification, no
// client certificate (the server does not check pg_hba for cancels).
func cancelTLSConfig(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	cc := c.Clone()
	cc.Certificates = nil
	return cc
}
