package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/broker"
)

func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVersionAndHelp(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		code    int
		wantOut string
		wantErr string
	}{
		{"version word", []string{"version"}, ExitOK, "plugin API 0.1.0", ""},
		{"version flag", []string{"-version"}, ExitOK, "go go1.", ""},
		{"version double dash", []string{"--version"}, ExitOK, "secretless-broker dev", ""},
		{"help", []string{"--help"}, ExitOK, "Usage:", ""},
		{"-h", []string{"-h"}, ExitOK, "Flags (one or two dashes)", ""},
		{"help word", []string{"help"}, ExitOK, "plugins verify", ""},
		{"bad flag", []string{"-nope"}, ExitUsage, "", "flag provided but not defined: -nope"},
		{"stray argument", []string{"-f", "x.yml", "extra"}, ExitUsage, "", `unexpected argument "extra"`},
		{"mistyped command", []string{"valdate"}, ExitUsage, "", `unexpected argument "valdate"; did you mean the validate command?`},
		{"validate with a bare file name", []string{"validate", "secretless.yml"}, ExitUsage, "", `validate: unexpected argument "secretless.yml" (name the config file with -f secretless.yml)`},
		{"shutdown timeout without a unit", []string{"-shutdown-timeout", "30"}, ExitUsage, "", `invalid value "30" for flag -shutdown-timeout: want a duration with a unit, such as 30s or 2m`},
		{"zero shutdown timeout", []string{"-shutdown-timeout", "0"}, ExitUsage, "", "-shutdown-timeout must be positive, not 0s"},
		{"negative shutdown timeout", []string{"-shutdown-timeout", "-1s"}, ExitUsage, "", "-shutdown-timeout must be positive, not -1s"},
		{"health address without a port", []string{"-health-addr", "5335"}, ExitUsage, "", `-health-addr "5335": want HOST:PORT or :PORT (:5335 for port 5335 on every address)`},
		{"health address host only", []string{"-health-addr", "localhost"}, ExitUsage, "", `-health-addr "localhost": want HOST:PORT or :PORT, or`},
		{"health address port out of range", []string{"-health-addr", "127.0.0.1:99999"}, ExitUsage, "", `-health-addr "127.0.0.1:99999": port 99999 is out of range`},
		{"health address unknown service name", []string{"-health-addr", ":notaport"}, ExitUsage, "", `":notaport": "notaport" is neither a port number nor a known service name`},
		{"validate: health address garbage", []string{"validate", "-health-addr", "garbage"}, ExitUsage, "", `validate: -health-addr "garbage": want HOST:PORT`},
		{"validate: health address port out of range", []string{"validate", "-health-addr", "127.0.0.1:99999"}, ExitUsage, "", "port 99999 is out of range"},
		{"validate: health address unknown service name", []string{"validate", "-health-addr", ":notaport"}, ExitUsage, "", "neither a port number nor a known service name"},
		{"plugins without subcommand", []string{"plugins"}, ExitUsage, "", "plugins sum DIR"},
		{"plugins unknown", []string{"plugins", "frob"}, ExitUsage, "", `unknown subcommand "frob"`},
		{"verify without -s", []string{"plugins", "verify", "-p", "/tmp"}, ExitUsage, "", "-s FILE is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runMain(t, tt.args...)
			if code != tt.code || !strings.Contains(out, tt.wantOut) || !strings.Contains(errs, tt.wantErr) {
				t.Fatalf("code %d (want %d)\nstdout: %s\nstderr: %s", code, tt.code, out, errs)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Setenv("X", "x")
	good := writeFile(t, "good.yml", "version: 2\nservices:\n  db:\n    connector: pg\n    listenOn: tcp://127.0.0.1:15432\n    credentials:\n      host: localhost\n      username: app\n      password: {from: env, get: X}\n")
	plugin := writeFile(t, "plugin.yml", "version: 2\nservices:\n  r:\n    connector: redis\n    listenOn: tcp://127.0.0.1:16379\n")
	loose := writeFile(t, "loose.yml", "version: 2\nservices:\n  api:\n    connector: generic_http\n    listenOn: tcp://127.0.0.1:18080\n    credentials:\n      token: t0ken-value\n    config:\n      authenticateURLsMatching: ^http://api.example.com/\n      headers:\n        Authorization: 'Bearer {{ .token }}'\n")
	onHealth := writeFile(t, "onhealth.yml", "version: 2\nservices:\n  db:\n    connector: pg\n    listenOn: tcp://127.0.0.1:5335\n    credentials:\n      host: localhost\n      username: app\n")
	nearBuiltin := writeFile(t, "pgx.yml", "version: 2\nservices:\n  r:\n    connector: pgx\n    listenOn: tcp://127.0.0.1:16379\n")
	bad := writeFile(t, "bad.yml", "version: 2\nservices:\n  db:\n    connector: pg\n    listenOn: tcp://127.0.0.1:99999\n")
	emptyDir := t.TempDir()
	sums := writeFile(t, "sums.txt", "")
	// Values from env and file providers are checked at load as literal
	// ones are, not at the first connection.
	t.Setenv("BADMODE", "bogus")
	t.Setenv("BADPORT", "54x32")
	t.Setenv("SECRETKEY", "not-a-pem-key-s3cr3t")
	const pgHead = "version: 2\nservices:\n  db:\n    connector: pg\n    listenOn: tcp://127.0.0.1:15432\n    credentials:\n      host: localhost\n      username: app\n"
	envMode := writeFile(t, "envmode.yml", pgHead+"      sslmode: {from: env, get: BADMODE}\n")
	envPort := writeFile(t, "envport.yml", pgHead+"      port: {from: env, get: BADPORT}\n")
	rootFile := writeFile(t, "root.txt", "no certificate here\n")
	fileRoot := writeFile(t, "fileroot.yml", pgHead+"      sslmode: verify-ca\n      sslrootcert: {from: file, get: "+rootFile+"}\n")
	certFile := writeFile(t, "client.crt", selfSignedPEM(t))
	envKey := writeFile(t, "envkey.yml", pgHead+"      sslcert: "+certFile+"\n      sslkey: {from: env, get: SECRETKEY}\n")
	tests := []struct {
		name    string
		args    []string
		code    int
		wantOut string
		wantErr string
	}{
		{"good", []string{"validate", "-f", good}, ExitOK, "ok (1 services)", ""},
		{"bad port", []string{"validate", "-f", bad}, ExitFailure, "", "bad.yml:5: services.db.listenOn: port 99999 out of range"},
		{"missing file", []string{"validate", "-f", filepath.Join(emptyDir, "none.yml")}, ExitFailure, "", "none.yml: no such file"},
		{"plugin connector unchecked without -p", []string{"validate", "-f", plugin}, ExitOK, "ok", "not built in, so not checked"},
		{"plugin connector missing with -p", []string{"validate", "-f", plugin, "-p", emptyDir, "-s", sums}, ExitFailure, "", `plugin.yml:4: services.r.connector: unknown connector "redis"`},
		{"plugin id close to a built-in one, without -p", []string{"validate", "-f", nearBuiltin}, ExitOK, "ok", `pgx (service r; unless a plugin has this id, you meant "pg")`},
		{"plugin id close to a built-in one, missing with -p", []string{"validate", "-f", nearBuiltin, "-p", emptyDir, "-s", sums}, ExitFailure, "", `unknown connector "pgx"; did you mean "pg"?`},
		{"loose URL pattern warned about", []string{"validate", "-f", loose}, ExitOK, "ok (1 services)",
			`warning: ` + loose + `:9: services.api.config.authenticateURLsMatching: URL pattern may match more than meant`},
		{"service on the default health address", []string{"validate", "-f", onHealth}, ExitFailure, "", "services.db.listenOn: address tcp://127.0.0.1:5335 is also the health server's (-health-addr :5335)"},
		{"service on the health address given", []string{"validate", "-f", good, "-health-addr", "127.0.0.1:15432"}, ExitFailure, "", "is also the health server's (-health-addr 127.0.0.1:15432)"},
		{"health server off", []string{"validate", "-f", onHealth, "-health-addr", ""}, ExitOK, "ok (1 services)", ""},
		{"sslmode from env", []string{"validate", "-f", envMode}, ExitFailure, "", "envmode.yml:9: services.db.credentials.sslmode: rejected by connector \"pg\": must be one of"},
		{"port from env", []string{"validate", "-f", envPort}, ExitFailure, "", "envport.yml:9: services.db.credentials.port:"},
		{"root certificate from file", []string{"validate", "-f", fileRoot}, ExitFailure, "", "fileroot.yml:10: services.db.credentials.sslrootcert:"},
		{"key from env", []string{"validate", "-f", envKey}, ExitFailure, "", "envkey.yml:10: services.db.credentials.sslkey:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runMain(t, tt.args...)
			if code != tt.code || !strings.Contains(out, tt.wantOut) || !strings.Contains(errs, tt.wantErr) {
				t.Fatalf("code %d (want %d)\nstdout: %s\nstderr: %s", code, tt.code, out, errs)
			}
			if strings.Contains(out+errs, "s3cr3t") {
				t.Errorf("a secret value from the environment was printed:\n%s%s", out, errs)
			}
		})
	}
}

// selfSignedPEM is a certificate in PEM, for a credential that must hold one.
func selfSignedPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "app"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestStartupFailures(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfgOn := func(addr string) string {
		return writeFile(t, "s.yml", "version: 2\nservices:\n  db:\n    connector: pg\n    listenOn: tcp://"+addr+"\n    credentials:\n      host: localhost\n      username: app\n")
	}
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	noPlugins := t.TempDir()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"listener in use", []string{"-f", cfgOn(busy.Addr().String()), "-p", noPlugins, "-health-addr", ""}, "service db: listen on tcp://" + busy.Addr().String() + ": address already in use"},
		{"health address in use", []string{"-f", cfgOn(free()), "-p", noPlugins, "-health-addr", busy.Addr().String()}, "address already in use (choose another address with -health-addr"},
		{"health address is a service's", func() []string {
			a := free()
			return []string{"-f", cfgOn(a), "-p", noPlugins, "-health-addr", a}
		}(), "is also the health server's (-health-addr "},
		{"plugin connector with a plugin dir that does not exist", []string{"-f", writeFile(t, "r.yml", "version: 2\nservices:\n  r:\n    connector: redis\n    listenOn: tcp://127.0.0.1:16379\n"),
			"-p", filepath.Join(noPlugins, "plugin"), "-health-addr", ""}, "(the plugin directory " + filepath.Join(noPlugins, "plugin") + " does not exist, so no plugin was loaded"},
		{"checksum file without plugin dir", []string{"-f", cfgOn(free()), "-p", filepath.Join(noPlugins, "nope"), "-s", writeFile(t, "s.txt", ""), "-health-addr", ""}, "nope"},
		{"config not found", []string{"-f", filepath.Join(noPlugins, "absent.yml")}, "absent.yml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := runMain(t, tt.args...)
			if code != ExitFailure || !strings.Contains(errs, tt.wantErr) {
				t.Fatalf("code %d\nstderr: %s\nwant: %s", code, errs, tt.wantErr)
			}
			if n := strings.Count(strings.TrimSpace(errs), "\n"); n != 0 {
				t.Errorf("want one message on stderr, got %d lines:\n%s", n+1, errs)
			}
		})
	}
}

func TestHealthCommand(t *testing.T) {
	ready := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/live" {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(ready)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"ready 503", []string{"health", "-health-addr", addr}, ExitFailure},
		{"live 200", []string{"health", "-health-addr", addr, "/live"}, ExitOK},
		{"path without slash", []string{"health", "-health-addr", addr, "live"}, ExitOK},
		{"nothing listening", []string{"health", "-health-addr", "127.0.0.1:1"}, ExitFailure},
		{"bad address", []string{"health", "-health-addr", "nope"}, ExitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, out, errs := runMain(t, tt.args...); code != tt.code {
				t.Fatalf("code %d, want %d\n%s%s", code, tt.code, out, errs)
			}
		})
	}
}

func TestEmptyFlagValues(t *testing.T) {
	for _, f := range []string{"-s", "-f", "-p"} {
		t.Run(f, func(t *testing.T) {
			code, _, errs := runMain(t, f, "")
			if code != ExitUsage || !strings.Contains(errs, f+" was given an empty value") {
				t.Fatalf("code %d, stderr %s", code, errs)
			}
		})
	}
}

func TestDisplayName(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "redis.so", "redis.so"},
		{"spaces and unicode", "my plugin é.so", "my plugin é.so"},
		{"newline forging a line", "x.so\nok      evil.so", `"x.so\nok      evil.so"`},
		{"invalid utf-8", "x\xff.so", `"x\xff.so"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := displayName(tc.in); got != tc.want {
				t.Errorf("displayName(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

// TestProfileCheckedBeforeListeners: a bad -profile address refuses
// start-up before any listener opens (a unix socket would be left behind).
func TestProfileCheckedBeforeListeners(t *testing.T) {
	t.Setenv("X", "x")
	sock := filepath.Join(t.TempDir(), "pg.sock")
	cfg := writeFile(t, "s.yml", "version: 2\nservices:\n  db:\n    connector: pg\n    listenOn: unix://"+sock+
		"\n    credentials:\n      host: localhost\n      username: app\n      password: {from: env, get: X}\n")
	for _, tc := range []struct{ name, addr, want string }{
		{"not loopback", "0.0.0.0:0", "pprof is served on loopback addresses only"},
		{"malformed", "nowhere", "want host:port on loopback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runMain(t, "-f", cfg, "-health-addr", "", "-profile", tc.addr)
			if code != ExitFailure || !strings.Contains(errs, tc.want) {
				t.Fatalf("code %d, stderr %s", code, errs)
			}
			if _, err := os.Lstat(sock); err == nil {
				t.Error("the service's socket was created before -profile was checked")
			}
		})
	}
}

func TestPluginsCheckNeedsSoName(t *testing.T) {
	f := writeFile(t, "SUMS.txt", "not a plugin\n")
	code, out, _ := runMain(t, "plugins", "check", f)
	if code != ExitFailure || !strings.Contains(out, "SUMS.txt: the broker loads only files named NAME.so") || strings.Contains(out, "SUMS.txt.so") {
		t.Fatalf("code %d, output:\n%s", code, out)
	}
}

// TestValidateLogger: validate shows the plugin loader's warnings (such as
// plugins loaded without a checksum file) on stderr, not its per-plugin
// reports.
func TestValidateLogger(t *testing.T) {
	var buf bytes.Buffer
	log := validateLogger(&buf)
	log.Info("plugin checked, not verified (no checksum file)")
	log.Warn("PLUGIN CHECKSUMS ARE NOT VERIFIED")
	if out := buf.String(); !strings.Contains(out, "PLUGIN CHECKSUMS ARE NOT VERIFIED") || strings.Contains(out, "plugin checked") {
		t.Fatalf("stderr:\n%s", out)
	}
}

// TestSignalDuringStuckStartup: a SIGTERM during a start-up that does not
// finish ends the broker startupAbandon later, with a message; a start-up
// that finishes in that time is used as usual.
func TestSignalDuringStuckStartup(t *testing.T) {
	defer func(p func(broker.Options) (*broker.Broker, error)) { prepare = p }(prepare)
	release := make(chan struct{})
	defer close(release)
	prepare = func(broker.Options) (*broker.Broker, error) {
		<-release
		return nil, errors.New("released")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	_, err := prepareInterruptible(ctx, broker.Options{})
	if err == nil || !strings.Contains(err.Error(), "start-up interrupted by a signal") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d < startupAbandon || d > startupAbandon+2*time.Second {
		t.Errorf("gave up after %s, want about %s", d, startupAbandon)
	}
	prepare = func(broker.Options) (*broker.Broker, error) { return nil, errors.New("prepared") }
	if _, err := prepareInterruptible(ctx, broker.Options{}); err == nil || err.Error() != "prepared" {
		t.Errorf("a start-up that finishes: err = %v", err)
	}
}

// TestEveryProblemInOneRun: a file whose services have problems both in
// parsing (a bad port) and in their connectors (an unknown connector, a pg
// config block it rejects) gets all of them reported in one run, by
// start-up and by validate, in line order.
func TestEveryProblemInOneRun(t *testing.T) {
	cfg := writeFile(t, "multi.yml", `version: 2
services:
  db:
    connector: pg
    listenOn: tcp://127.0.0.1:70000
    credentials:
      host: localhost
      username: app
  web:
    connector: nope
    listenOn: tcp://127.0.0.1:18080
  db2:
    connector: pg
    listenOn: tcp://127.0.0.1:15433
    credentials:
      host: localhost
      username: app
    config:
      nonsense: 1
`)
	noPlugins := t.TempDir()
	for _, args := range [][]string{
		{"-f", cfg, "-p", noPlugins, "-health-addr", ""},
		{"validate", "-f", cfg, "-p", noPlugins},
	} {
		t.Run(args[0], func(t *testing.T) {
			code, _, errs := runMain(t, args...)
			if code != ExitFailure {
				t.Fatalf("code %d, stderr:\n%s", code, errs)
			}
			want := []string{
				"multi.yml:5: services.db.listenOn: port 70000 out of range",
				`multi.yml:10: services.web.connector: unknown connector "nope"`,
				`multi.yml:19: services.db2.config.nonsense: rejected by connector "pg": unknown key`,
			}
			last := -1
			for _, w := range want {
				i := strings.Index(errs, w)
				if i < 0 {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
					continue
				}
				if i < last {
					t.Errorf("%q is out of line order:\n%s", w, errs)
				}
				last = i
			}
		})
	}
}

// TestProblemInAnchorReportedOnce: a problem in an x- anchor that a
// service merges is not reported a second time by that service's
// connector.
func TestProblemInAnchorReportedOnce(t *testing.T) {
	cfg := writeFile(t, "anchor.yml", `version: 2
x-common: &pgc
  connectTimeout: 5s
  connectTimeout: 6s
services:
  db:
    connector: pg
    listenOn: tcp://127.0.0.1:46801
    credentials: {host: localhost, username: app}
    config: *pgc
`)
	code, _, errs := runMain(t, "validate", "-f", cfg)
	if code != ExitFailure || strings.Count(errs, "given twice") != 1 || !strings.Contains(errs, "anchor.yml:4: x-common.connectTimeout: given twice") {
		t.Fatalf("code %d, want one report at line 4:\n%s", code, errs)
	}
}

// TestNoPluginDirHintWithOtherProblems: the hint that the plugin directory
// does not exist stays on an unknown connector when other services of the
// file have problems too.
func TestNoPluginDirHintWithOtherProblems(t *testing.T) {
	cfg := writeFile(t, "hint.yml", `version: 2
services:
  r:
    connector: myplug
    listenOn: tcp://127.0.0.1:16379
  db:
    connector: pg
    listenOn: tcp://127.0.0.1:99999
    credentials: {host: localhost, username: app}
`)
	missing := filepath.Join(t.TempDir(), "nosuchdir")
	code, _, errs := runMain(t, "-f", cfg, "-p", missing, "-health-addr", "")
	if code != ExitFailure || !strings.Contains(errs, "port 99999 out of range") ||
		!strings.Contains(errs, "(the plugin directory "+missing+" does not exist, so no plugin was loaded)") {
		t.Fatalf("code %d, want both problems and the hint:\n%s", code, errs)
	}
}
