package pg

import (
	"bytes"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
	sdklog "github.com/secretless-broker/secretless-broker/sdk/log"
)

func TestPluginIdentity(t *testing.T) {
	p := Plugin()
	if _, ok := p.(tcp.Validator); !ok {
		t.Fatal("Plugin does not implement tcp.Validator")
	}
	if ID != "pg" {
		t.Errorf("ID %q", ID)
	}
}

// TestValidateConfig: input, then the expected message (golden style).
// Every error names the offending key.
func TestValidateConfig(t *testing.T) {
	dir := t.TempDir()
	pki, err := newTestPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		config  string
		wantErr string // "" for valid
	}{
		{name: "empty", config: ""},
		{name: "timeouts", config: "connectTimeout: 2s\nhandshakeTimeout: 1m\nscramCacheSize: 0\n"},
		{name: "tls from files", config: "tls:\n  cert: " + pki.serverCertFile + "\n  key: " + pki.serverKeyFile + "\n  require: true\n  minVersion: \"1.3\"\n"},
		{name: "tls inline pem", config: "tls:\n  cert: |\n" + indent(string(pki.serverCertPEM), "    ") + "  key: |\n" + indent(string(pki.serverKeyPEM), "    ")},
		{name: "unknown top-level key", config: "tsl: {}\n", wantErr: "config.tsl: unknown key; known keys here: connectTimeout, handshakeTimeout, scramCacheSize, serverPool, tls"},
		{name: "unknown tls key", config: "tls:\n  certificate: x\n", wantErr: "config.tls.certificate: unknown key; known keys here: cert, key, minVersion, require"},
		{name: "bad duration", config: "connectTimeout: soon\n", wantErr: `config.connectTimeout: not a duration (like 5s or 1m): "soon"`},
		{name: "negative duration", config: "handshakeTimeout: -1s\n", wantErr: "config.handshakeTimeout: must be positive, got -1s"},
		{name: "negative cache", config: "scramCacheSize: -2\n", wantErr: "config.scramCacheSize: must be 0 (disabled) or more, got -2"},
		{name: "tls without cert", config: "tls:\n  key: x\n", wantErr: "config.tls.cert: required when tls is set"},
		{name: "tls without key", config: "tls:\n  cert: x\n", wantErr: "config.tls.key: required when tls is set"},
		{name: "missing cert file", config: "tls:\n  cert: /nonexistent/c.pem\n  key: /nonexistent/k.pem\n", wantErr: "config.tls.cert: neither PEM contents"},
		{name: "file without pem", config: "tls:\n  cert: " + notPEM + "\n  key: " + pki.serverKeyFile + "\n", wantErr: "config.tls.cert: file " + notPEM + " holds no PEM data"},
		{name: "encrypted key", config: "tls:\n  cert: " + pki.serverCertFile + "\n  key: |\n" + indent(encryptedTraditional, "    "),
			wantErr: "config.tls.key: an encrypted private key, which is not supported"},
		{name: "mismatched key", config: "tls:\n  cert: " + pki.serverCertFile + "\n  key: " + pki.clientKeyFile + "\n", wantErr: "config.tls.cert: with tls.key: tls: private key does not match public key"},
		{name: "bad min version", config: "tls:\n  cert: " + pki.serverCertFile + "\n  key: " + pki.serverKeyFile + "\n  minVersion: \"1.0\"\n", wantErr: `config.tls.minVersion: must be "1.2" or "1.3", got "1.0"`},
		{name: "wrong type", config: "connectTimeout: [1]\n", wantErr: "config.connectTimeout: must be a duration (like 5s or 1m), not a list"},
		{name: "fractional maxIdle", config: "serverPool: {maxIdle: 0.5}\n", wantErr: `config.serverPool.maxIdle: must be a whole number, got "0.5"`},
		{name: "fractional cache size", config: "scramCacheSize: 1.5e3\n", wantErr: `config.scramCacheSize: must be a whole number, got "1.5e3"`},
		{name: "word for maxIdle", config: "serverPool: {maxIdle: lots}\n", wantErr: `config.serverPool.maxIdle: must be a whole number, got "lots"`},
		{name: "quoted bool", config: "tls: {require: 'true'}\n", wantErr: `config.tls.require: must be true or false, got "true"`},
		{name: "mapping for a string", config: "tls: {cert: {a: 1}}\n", wantErr: "config.tls.cert: must be a string, not a mapping"},
		{name: "key given twice", config: "connectTimeout: 1s\nconnectTimeout: 2s\n", wantErr: "config.connectTimeout: given twice"},
		{name: "not a mapping", config: "- a\n", wantErr: "config: must be a mapping"},
		{name: "server pool", config: "serverPool:\n  maxIdle: 8\n  idleTimeout: 30s\n"},
		{name: "server pool off", config: "serverPool: {maxIdle: 0}\n"},
		{name: "server pool without maxIdle", config: "serverPool: {idleTimeout: 30s}\n", wantErr: "config.serverPool.maxIdle: required when serverPool is set"},
		{name: "server pool negative", config: "serverPool: {maxIdle: -1}\n", wantErr: "config.serverPool.maxIdle: must be between 0 (off) and 10000, got -1"},
		{name: "server pool bad timeout", config: "serverPool: {maxIdle: 2, idleTimeout: 0s}\n", wantErr: "config.serverPool.idleTimeout: must be positive, got 0s"},
		{name: "server pool unknown key", config: "serverPool: {max: 2}\n", wantErr: "config.serverPool.max: unknown key; known keys here: idleTimeout, maxIdle, maxLifetime"},
		{name: "server pool bad lifetime", config: "serverPool: {maxIdle: 2, maxLifetime: forever}\n", wantErr: `config.serverPool.maxLifetime: not a duration (like 5s or 1m): "forever"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Plugin().(tcp.Validator).ValidateConfig([]byte(tc.config))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, tc.wantErr)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error does not wrap ErrConfig")
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error reveals key material")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := parseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.connectTimeout != 5*time.Second || cfg.handshakeTimeout != 30*time.Second || cfg.clientTLS != nil || cfg.scramCacheSize != defaultSCRAMCacheSize {
		t.Errorf("defaults %+v", cfg)
	}
}

func TestParseCredentials(t *testing.T) {
	dir := t.TempDir()
	pki, err := newTestPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := func(kv ...string) connector.CredentialValuesByID {
		c := connector.CredentialValuesByID{"host": []byte("db.example"), "username": []byte("u"), "password": []byte("secret-pw")}
		for i := 0; i+1 < len(kv); i += 2 {
			c[kv[i]] = []byte(kv[i+1])
		}
		return c
	}
	tests := []struct {
		name    string
		creds   connector.CredentialValuesByID
		check   func(t *testing.T, tg *target)
		wantErr string
	}{
		{name: "defaults", creds: base(), check: func(t *testing.T, tg *target) {
			if tg.addr != "db.example:5432" || tg.sslmode != sslRequire || tg.tlsConf == nil || !tg.tlsConf.InsecureSkipVerify {
				t.Errorf("%+v", tg)
			}
		}},
		{name: "unix socket never uses tls", creds: base("host", "/run/pg", "port", "6543"), check: func(t *testing.T, tg *target) {
			if tg.network != "unix" || tg.addr != "/run/pg/.s.PGSQL.6543" || tg.tlsConf != nil {
				t.Errorf("%+v", tg)
			}
		}},
		{name: "extra credentials become parameters", creds: base("application_name", "x", "search_path", "s"), check: func(t *testing.T, tg *target) {
			if len(tg.extra) != 2 {
				t.Errorf("extra %v", tg.extra)
			}
		}},
		{name: "verify-full with pem root", creds: base("sslmode", "verify-full", "sslrootcert", string(pki.caPEM), "sslhost", "other.example"), check: func(t *testing.T, tg *target) {
			// The chain and the name are checked by verifyFull, as libpq checks them.
			if !tg.tlsConf.InsecureSkipVerify || tg.tlsConf.VerifyConnection == nil || tg.tlsConf.ServerName != "other.example" {
				t.Errorf("%+v", tg.tlsConf)
			}
		}},
		{name: "verify-ca with root file", creds: base("sslmode", "verify-ca", "sslrootcert", pki.caFile), check: func(t *testing.T, tg *target) {
			if !tg.tlsConf.InsecureSkipVerify || tg.tlsConf.VerifyConnection == nil {
				t.Errorf("verify-ca must check the chain itself")
			}
		}},
		{name: "client cert from pem and file", creds: base("sslcert", string(pki.clientCertPEM), "sslkey", pki.clientKeyFile), check: func(t *testing.T, tg *target) {
			if len(tg.tlsConf.Certificates) != 1 {
				t.Errorf("no client certificate")
			}
		}},
		{name: "system roots", creds: base("sslmode", "verify-full", "sslrootcert", "system")},
		{name: "missing host", creds: base("host", ""), wantErr: "credential host: missing"},
		{name: "missing username", creds: base("username", ""), wantErr: "credential username: missing"},
		{name: "user is not a startup parameter", creds: base("user", "admin"), wantErr: "credential user: not allowed"},
		{name: "bad port", creds: base("port", "54x32"), wantErr: "credential port: not a port number"},
		{name: "bad sslmode", creds: base("sslmode", "maybe"), wantErr: "credential sslmode: must be one of"},
		{name: "cert without key", creds: base("sslcert", string(pki.clientCertPEM)), wantErr: "credential sslkey: missing"},
		{name: "key without cert", creds: base("sslkey", string(pki.clientKeyPEM)), wantErr: "credential sslcert: missing"},
		{name: "root cert not pem", creds: base("sslrootcert", "-----BEGIN nothing"), wantErr: "credential sslrootcert: no certificate found"},
		{name: "damaged pem is not echoed", creds: base("sslkey", "MIIEvQIBADANBg\nkqhkiG9w0BAQEFAASC", "sslcert", pki.clientCertFile),
			wantErr: "credential sslkey: neither PEM contents"},
		{name: "encrypted pkcs8 key", creds: base("sslkey", encryptedPKCS8, "sslcert", pki.clientCertFile),
			wantErr: "credential sslkey: an encrypted private key, which is not supported"},
		{name: "encrypted traditional key", creds: base("sslkey", encryptedTraditional, "sslcert", pki.clientCertFile),
			wantErr: "credential sslkey: an encrypted private key, which is not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg, err := parseCredentials(tc.creds)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				for _, v := range tc.creds {
					if len(v) > 3 && strings.Contains(err.Error(), string(v)) && string(v) != "54x32" {
						t.Errorf("error reveals a credential value: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, tg)
			}
		})
	}
}

func TestStartupParamsBuild(t *testing.T) {
	client := []param{{"user", "client-user"}, {"database", "clientdb"}, {"application_name", "app"}, {"DateStyle", "ISO"}}
	tests := []struct {
		name string
		tg   target
		want map[string]string
	}{
		{"client database", target{username: "real"},
			map[string]string{"user": "real", "database": "clientdb", "application_name": "app", "DateStyle": "ISO"}},
		{"credential database wins", target{username: "real", database: "fixed"},
			map[string]string{"user": "real", "database": "fixed", "application_name": "app", "DateStyle": "ISO"}},
		{"credential parameter wins", target{username: "real", extra: []param{{"DateStyle", "German"}}},
			map[string]string{"user": "real", "database": "clientdb", "application_name": "app", "DateStyle": "German"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]string{}
			for _, p := range startupParams(client, &tc.tg) {
				if _, dup := got[p.key]; dup {
					t.Errorf("duplicate %s", p.key)
				}
				got[p.key] = p.value
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
	got := startupParams([]param{{"user", "x"}}, &target{username: "real"})
	if got[len(got)-1] != (param{"database", "real"}) {
		t.Errorf("missing database does not default to the user name: %v", got)
	}
	// PostgreSQL takes the last of duplicated startup parameters.
	got = startupParams([]param{{"user", "x"}, {"database", "first"}, {"database", "last"}}, &target{username: "real"})
	if got[len(got)-1] != (param{"database", "last"}) || len(got) != 2 {
		t.Errorf("duplicated database: %v, want the last one only", got)
	}
}

// TestDocExampleConfig checks that the config block shown in the package
// documentation loads (with its file paths pointed at test files).
func TestDocExampleConfig(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(src)
	start := strings.Index(doc, "//\tconfig:\n")
	if start < 0 {
		t.Fatal("no config example in doc.go")
	}
	var lines []string
	for _, l := range strings.Split(doc[start:], "\n")[1:] {
		if !strings.HasPrefix(l, "//\t") {
			break
		}
		lines = append(lines, strings.TrimPrefix(l, "//\t  "))
	}
	pki, err := newTestPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	example := strings.Join(lines, "\n")
	example = strings.ReplaceAll(example, "/etc/broker/pg.crt", pki.serverCertFile)
	example = strings.ReplaceAll(example, "/etc/broker/pg.key", pki.serverKeyFile)
	if err := Plugin().(tcp.Validator).ValidateConfig([]byte(example)); err != nil {
		t.Fatalf("documented example does not load: %v\n%s", err, example)
	}
}

type fakeResources struct {
	cfg []byte
	log *testLogger
}

func (r fakeResources) Config() []byte        { return r.cfg }
func (r fakeResources) Logger() sdklog.Logger { return r.log }

// TestNewConnectorThroughPlugin builds the connector the way the broker
// does; an invalid block (which ValidateConfig would have refused) is
// logged with its key and makes connections fail.
func TestNewConnectorThroughPlugin(t *testing.T) {
	l := &testLogger{}
	c := Plugin().NewConnector(fakeResources{cfg: []byte("bogus: 1\n"), log: l})
	pc, ok := c.(*pgConnector)
	if !ok || pc.cfgErr == nil {
		t.Fatalf("connector %T, cfgErr %v", c, pc.cfgErr)
	}
	if lines := strings.Join(l.lines(), "\n"); !strings.Contains(lines, "config.bogus: unknown key") {
		t.Errorf("log %q", lines)
	}
	if c := Plugin().NewConnector(fakeResources{log: l}).(*pgConnector); c.cfgErr != nil || c.scram == nil || c.cancels == nil {
		t.Errorf("default connector %+v", c)
	}
}

// TestPasswordScrubbed: even if an error text somehow contained the
// password, neither the client nor the log would see it.
func TestPasswordScrubbed(t *testing.T) {
	const pw = "hunter2-Secret"
	client, peer := net.Pipe()
	defer client.Close()
	defer peer.Close()
	s := &session{raw: client, client: client, password: []byte(pw)}
	err := newError(ErrServerRejected, codeInvalidPassword, "bad thing with "+pw, errors.New("cause "+pw))
	got := s.scrub(err)
	if strings.Contains(got.Error(), pw) || !errors.Is(got, ErrServerRejected) {
		t.Errorf("scrubbed error %q", got)
	}
	// The rest stays readable: the message around it, the SQLSTATE, the cause.
	for _, want := range []string{"bad thing with [REDACTED]", "SQLSTATE " + codeInvalidPassword, "cause [REDACTED]"} {
		if !strings.Contains(got.Error(), want) {
			t.Errorf("scrubbed error %q lost %q", got, want)
		}
	}
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(peer); done <- b }()
	s.reportToClient(err)
	client.Close()
	msg := <-done
	if bytes.Contains(msg, []byte(pw)) || !bytes.Contains(msg, []byte(codeInvalidPassword)) {
		t.Errorf("client got %q", msg)
	}
}

// Encrypted private keys in the two PEM forms openssl writes (the bodies
// are not real keys: the PEM framing is what marks them encrypted).
var (
	encryptedPKCS8 = string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("not a real key")}))

	encryptedTraditional = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY",
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF"},
		Bytes:   []byte("not a real key")}))
)

// TestValidateConfigEveryProblem: all the problems of a config block are
// reported together, not only the first.
func TestValidateConfigEveryProblem(t *testing.T) {
	cfg := "connectTimeout: banana\nnonsense: 1\nserverPool: {maxIdle: -1, idleTimeout: soon, max: 3}\nhandshakeTimeout: 0s\n"
	err := Plugin().(tcp.Validator).ValidateConfig([]byte(cfg))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"config.nonsense: unknown key",
		"config.serverPool.max: unknown key",
		`config.connectTimeout: not a duration (like 5s or 1m): "banana"`,
		"config.serverPool.maxIdle: must be between 0 (off)",
		`config.serverPool.idleTimeout: not a duration (like 5s or 1m): "soon"`,
		"config.handshakeTimeout: must be positive",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error\n  %v\nlacks\n  %s", err, want)
		}
	}
	if !errors.Is(err, ErrConfig) {
		t.Error("error does not wrap ErrConfig")
	}
}
