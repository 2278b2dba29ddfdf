package pg

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults of the config block.
const (
	defaultConnectTimeout   = 5 * time.Second
	defaultHandshakeTimeout = 30 * time.Second
	defaultSCRAMCacheSize   = 64
	defaultPoolIdleTimeout  = time.Minute
	defaultPoolMaxLifetime  = time.Hour
	maxPoolIdle             = 10000
)

// rawConfig is the YAML shape of a service's config block.
type rawConfig struct {
	TLS              *rawTLS  `yaml:"tls"`
	ConnectTimeout   string   `yaml:"connectTimeout"`
	HandshakeTimeout string   `yaml:"handshakeTimeout"`
	SCRAMCacheSize   *int     `yaml:"scramCacheSize"`
	ServerPool       *rawPool `yaml:"serverPool"`
}

type rawPool struct {
	MaxIdle     *int   `yaml:"maxIdle"`
	IdleTimeout string `yaml:"idleTimeout"`
	MaxLifetime string `yaml:"maxLifetime"`
}

type rawTLS struct {
	Cert       string `yaml:"cert"`
	Key        string `yaml:"key"`
	Require    bool   `yaml:"require"`
	MinVersion string `yaml:"minVersion"`
}

// allowedKeys lists the keys of each mapping of the config block, so that an
// unknown key is reported with its full path.
var allowedKeys = map[string][]string{
	"":           {"tls", "connectTimeout", "handshakeTimeout", "scramCacheSize", "serverPool"},
	"tls":        {"cert", "key", "require", "minVersion"},
	"serverPool": {"maxIdle", "idleTimeout", "maxLifetime"},
}

// keyTypes gives the YAML type of each scalar key, checked before decoding:
// the decoder would silently truncate a float such as maxIdle: 0.5.
var keyTypes = map[string]string{
	"connectTimeout": "duration", "handshakeTimeout": "duration", "scramCacheSize": "int",
	"serverPool.maxIdle": "int", "serverPool.idleTimeout": "duration", "serverPool.maxLifetime": "duration",
	"tls.cert": "string", "tls.key": "string", "tls.require": "bool", "tls.minVersion": "string",
}

// checkType reports a scalar key whose value has the wrong YAML type.
func checkType(key string, v *yaml.Node) error {
	want, ok := keyTypes[key]
	if !ok {
		return nil
	}
	if v.Kind != yaml.ScalarNode {
		return keyErr(key, "must be a %s, not a %s", typeWords[want], nodeKindWord(v))
	}
	switch {
	case want == "int" && v.Tag != "!!int":
		return keyErr(key, "must be a whole number, got %q", v.Value)
	case want == "bool" && v.Tag != "!!bool":
		return keyErr(key, "must be true or false, got %q", v.Value)
	}
	return nil
}

var typeWords = map[string]string{"int": "whole number", "bool": "true or false", "duration": "duration (like 5s or 1m)", "string": "string"}

func nodeKindWord(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	}
	return "value"
}

// config is a validated config block.
type config struct {
	clientTLS        *tls.Config // nil: TLS is not offered to clients
	requireTLS       bool
	connectTimeout   time.Duration
	handshakeTimeout time.Duration
	scramCacheSize   int
	poolMaxIdle      int           // 0: server connections are never reused
	poolIdleTimeout  time.Duration // an idle server connection is closed after this
	poolMaxLifetime  time.Duration // a server connection is not reused after this
}

// configError names the offending key of the config block.
type configError struct {
	key string
	err error
}

func (e *configError) Error() string { return "config." + e.key + ": " + e.err.Error() }
func (e *configError) Unwrap() []error {
	return []error{ErrConfig, e.err}
}

func keyErr(key string, format string, args ...any) error {
	return &configError{key: key, err: fmt.Errorf(format, args...)}
}

// parseConfig decodes and validates a config block; nil or empty bytes
// give the defaults.
func parseConfig(b []byte) (*config, error) {
	cfg := &config{
		connectTimeout:   defaultConnectTimeout,
		handshakeTimeout: defaultHandshakeTimeout,
		scramCacheSize:   defaultSCRAMCacheSize,
		poolIdleTimeout:  defaultPoolIdleTimeout,
		poolMaxLifetime:  defaultPoolMaxLifetime,
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return cfg, nil
	}
	var node yaml.Node
	if err := yaml.Unmarshal(b, &node); err != nil {
		return nil, fmt.Errorf("%w: config: %w", ErrConfig, err)
	}
	// Every problem is reported, not only the first.
	var errs []error
	if err := checkKeys(&node, ""); err != nil {
		errs = append(errs, err)
	}
	var raw rawConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(len(errs) == 0) // unknown keys are reported already
	if err := dec.Decode(&raw); err != nil {
		if len(errs) == 0 {
			errs = append(errs, fmt.Errorf("%w: config: %w", ErrConfig, err))
		}
		return nil, errors.Join(errs...)
	}
	fail := func(err error) { errs = append(errs, err) }
	duration := func(key, v string, into *time.Duration) {
		if v == "" {
			return
		}
		d, err := parsePositiveDuration(v)
		if err != nil {
			fail(keyErr(key, "%w", err))
			return
		}
		*into = d
	}
	duration("connectTimeout", raw.ConnectTimeout, &cfg.connectTimeout)
	duration("handshakeTimeout", raw.HandshakeTimeout, &cfg.handshakeTimeout)
	if raw.SCRAMCacheSize != nil {
		if *raw.SCRAMCacheSize < 0 {
			fail(keyErr("scramCacheSize", "must be 0 (disabled) or more, got %d", *raw.SCRAMCacheSize))
		} else {
			cfg.scramCacheSize = *raw.SCRAMCacheSize
		}
	}
	if p := raw.ServerPool; p != nil {
		switch {
		case p.MaxIdle == nil:
			fail(keyErr("serverPool.maxIdle", "required when serverPool is set (how many idle server connections to keep)"))
		case *p.MaxIdle < 0 || *p.MaxIdle > maxPoolIdle:
			fail(keyErr("serverPool.maxIdle", "must be between 0 (off) and %d, got %d", maxPoolIdle, *p.MaxIdle))
		default:
			cfg.poolMaxIdle = *p.MaxIdle
		}
		duration("serverPool.idleTimeout", p.IdleTimeout, &cfg.poolIdleTimeout)
		duration("serverPool.maxLifetime", p.MaxLifetime, &cfg.poolMaxLifetime)
	}
	if raw.TLS != nil {
		var err error
		if cfg.clientTLS, err = clientTLSConfig(raw.TLS); err != nil {
			fail(err)
		}
		cfg.requireTLS = raw.TLS.Require
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

func parsePositiveDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration (like 5s or 1m): %q", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be positive, got %s", s)
	}
	return d, nil
}

// checkKeys reports every key of a mapping that is not allowed (or given
// twice, or of the wrong type), with its dotted path.
func checkKeys(n *yaml.Node, path string) error {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return checkKeys(n.Content[0], path)
	}
	allowed, ok := allowedKeys[path]
	if !ok {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		if path == "" {
			return fmt.Errorf("%w: config: must be a mapping", ErrConfig)
		}
		return keyErr(path, "must be a mapping")
	}
	var errs []error
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		full := k
		if path != "" {
			full = path + "." + k
		}
		if seen[k] {
			errs = append(errs, keyErr(full, "given twice"))
			continue
		}
		seen[k] = true
		known := false
		for _, a := range allowed {
			if a == k {
				known = true
				break
			}
		}
		if !known {
			sorted := append([]string(nil), allowed...)
			sort.Strings(sorted)
			errs = append(errs, keyErr(full, "unknown key; known keys here: %s", strings.Join(sorted, ", ")))
			continue
		}
		if err := checkType(full, n.Content[i+1]); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := checkKeys(n.Content[i+1], full); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// clientTLSConfig builds the TLS configuration offered to clients.
func clientTLSConfig(raw *rawTLS) (*tls.Config, error) {
	if raw.Cert == "" {
		return nil, keyErr("tls.cert", "required when tls is set (PEM contents or a file path)")
	}
	if raw.Key == "" {
		return nil, keyErr("tls.key", "required when tls is set (PEM contents or a file path)")
	}
	certPEM, err := pemOrFile([]byte(raw.Cert))
	if err != nil {
		return nil, keyErr("tls.cert", "%w", err)
	}
	keyPEM, err := pemOrFile([]byte(raw.Key))
	if err != nil {
		return nil, keyErr("tls.key", "%w", err)
	}
	defer clear(keyPEM)
	if encryptedKey(keyPEM) {
		return nil, keyErr("tls.key", "%s", errEncryptedKey)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, keyErr("tls.cert", "with tls.key: %w", err)
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// libpq 17 offers ALPN "postgresql"; with direct TLS it is required.
		NextProtos: []string{alpnPostgres},
	}
	switch raw.MinVersion {
	case "", "1.2":
	case "1.3":
		conf.MinVersion = tls.VersionTLS13
	default:
		return nil, keyErr("tls.minVersion", "must be \"1.2\" or \"1.3\", got %q", raw.MinVersion)
	}
	return conf, nil
}

const alpnPostgres = "postgresql"

// errEncryptedKey is why an encrypted private key is refused.
const errEncryptedKey = "an encrypted private key, which is not supported (there is no passphrase setting); " +
	"give it decrypted, for example from: openssl pkey -in encrypted.key -out plain.key"

// encryptedKey reports whether PEM data holds an encrypted private key:
// PKCS#8 "ENCRYPTED PRIVATE KEY", or a traditional key with the
// "Proc-Type: 4,ENCRYPTED" header.
func encryptedKey(data []byte) bool {
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return false
		}
		enc := b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED")
		clear(b.Bytes)
		if enc {
			return true
		}
	}
}

// pemMarker tells PEM contents from a file path.
var pemMarker = []byte("-----BEGIN")

// pemOrFile returns v itself when it contains PEM data (the "-----BEGIN"
// marker), and otherwise reads the file that v names (surrounding
// whitespace trimmed). The result may hold a private key: callers zero it.
func pemOrFile(v []byte) ([]byte, error) {
	if bytes.Contains(v, pemMarker) {
		return bytes.Clone(v), nil
	}
	path := strings.TrimSpace(string(v))
	if path == "" {
		return nil, errors.New("empty value")
	}
	if len(path) > 4096 || strings.ContainsAny(path, "\n\r") {
		// Probably PEM contents with a damaged header: never echo it.
		return nil, fmt.Errorf("neither PEM contents (no %q marker) nor a file path", pemMarker)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		// The value may be key material (say base64 DER without a PEM
		// header), so neither it nor the *PathError that quotes it is shown.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("neither PEM contents (no %q marker) nor a readable file: %w", pemMarker, err)
	}
	if !bytes.Contains(b, pemMarker) {
		clear(b)
		// The value was a readable path, so it is a path: fine to show.
		return nil, fmt.Errorf("file %s holds no PEM data", path)
	}
	return b, nil
}
