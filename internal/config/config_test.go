package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

type testProviders struct{}

func (testProviders) Known(n string) bool   { return n == "env" || n == "file" || n == "literal" }
func (testProviders) NeedsID(n string) bool { return true }
func (testProviders) Names() []string       { return []string{"env", "file", "literal"} }

const good = `version: 2
services:
  pg:
    connector: pg
    listenOn: tcp://127.0.0.1:5432
    credentials:
      host: localhost
      port: 5432
      password:
        from: env
        get: PGPASS
    config:
      a: b
  sock:
    protocol: redis
    listenOn: unix:///tmp/x/redis.sock
    socketMode: "0600"
    maxConnections: 10
    connectTimeout: 5s
    idleTimeout: 1m
`

func TestAliasesResolve(t *testing.T) {
	in := "version: 2\nservices:\n  a:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    credentials:\n      host: &h db.internal\n      user: *h\n"
	cfg, err := Parse("c.yml", []byte(in), testProviders{})
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Services[0].Credentials; len(c) != 2 || c[0].Get != "db.internal" || c[1].Get != "db.internal" {
		t.Fatalf("credentials = %+v", c)
	}
}

func TestParseGood(t *testing.T) {
	for _, version := range []string{"2", `"2"`} {
		t.Run("version "+version, func(t *testing.T) {
			data := strings.Replace(good, "version: 2", "version: "+version, 1)
			cfg, err := Parse("s.yml", []byte(data), testProviders{})
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Services) != 2 {
				t.Fatalf("services = %d", len(cfg.Services))
			}
			pg := cfg.Services[0]
			if pg.Name != "pg" || pg.Connector != "pg" || pg.ListenOn.Network != "tcp" || pg.ListenOn.Address != "127.0.0.1:5432" {
				t.Errorf("pg = %+v", pg)
			}
			want := []Credential{{Name: "host", From: "literal", Get: "localhost", Line: 7},
				{Name: "password", From: "env", Get: "PGPASS", Line: 9}, {Name: "port", From: "literal", Get: "5432", Line: 8}}
			if len(pg.Credentials) != len(want) {
				t.Fatalf("credentials = %+v", pg.Credentials)
			}
			for i := range want {
				if pg.Credentials[i] != want[i] {
					t.Errorf("credential %d = %+v, want %+v", i, pg.Credentials[i], want[i])
				}
			}
			if string(pg.Config) != "a: b\n" {
				t.Errorf("config = %q", pg.Config)
			}
			if pg.SocketMode != DefaultSocketMode {
				t.Errorf("default socket mode = %o", pg.SocketMode)
			}
			s := cfg.Services[1]
			if s.Connector != "redis" || s.ListenOn.Network != "unix" || s.SocketMode != 0o600 ||
				s.MaxConnections != 10 || s.ConnectTimeout != 5*time.Second || s.IdleTimeout != time.Minute {
				t.Errorf("sock = %+v", s)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	svc := func(body string) string {
		return "version: 2\nservices:\n  svc:\n" + body
	}
	tests := []struct {
		name string
		in   string
		want []string // each must appear in the error
	}{
		{"empty file", "", []string{"c.yml: invalid YAML: file is empty"}},
		{"bad yaml", "version: 2\nservices: [\n", []string{"c.yml:", "invalid YAML"}},
		{"not a mapping", "- a\n", []string{"top level must be a mapping"}},
		{"missing version", "services:\n  a:\n    connector: pg\n    listenOn: tcp://:1\n", []string{"c.yml:1: version: missing"}},
		{"version 1", "version: 1\nservices: {}\n", []string{"c.yml:1: version: unsupported version \"1\""}},
		{"v1 keys", "version: 2\nlisteners: []\nservices: {}\n", []string{"c.yml:2: listeners: version 1 keys"}},
		{"unknown top key", "version: 2\nservice: {}\n", []string{"c.yml:2: service: unknown key", "services: missing"}},
		{"no services", "version: 2\nservices: {}\n", []string{"services: no services defined"}},
		{"unknown service key", svc("    connector: pg\n    listenOn: tcp://:1\n    listenon: x\n"), []string{"c.yml:6: services.svc.listenon: unknown key"}},
		{"missing connector", svc("    listenOn: tcp://:1\n"), []string{"c.yml:3: services.svc.connector: missing"}},
		{"missing listenOn", svc("    connector: pg\n"), []string{"services.svc.listenOn: missing"}},
		{"malformed listenOn", svc("    connector: pg\n    listenOn: tcp//localhost:5432\n"), []string{"c.yml:5: services.svc.listenOn: malformed address \"tcp//localhost:5432\""}},
		{"no port", svc("    connector: pg\n    listenOn: tcp://localhost\n"), []string{"services.svc.listenOn: malformed address"}},
		{"port not number", svc("    connector: pg\n    listenOn: tcp://localhost:pg\n"), []string{"services.svc.listenOn:", "not a number"}},
		{"port out of range", svc("    connector: pg\n    listenOn: tcp://localhost:70000\n"), []string{"services.svc.listenOn: port 70000 out of range"}},
		{"port zero", svc("    connector: pg\n    listenOn: tcp://localhost:0\n"), []string{"services.svc.listenOn: port 0 out of range"}},
		{"relative unix", svc("    connector: pg\n    listenOn: unix://tmp/x.sock\n"), []string{"services.svc.listenOn: malformed address"}},
		{"host with userinfo", svc("    connector: pg\n    listenOn: tcp://user@127.0.0.1:1\n"), []string{`services.svc.listenOn: malformed address "tcp://user@127.0.0.1:1": bad host`}},
		{"nul in unix path", svc("    connector: pg\n    listenOn: \"unix:///tmp/a\\0b.sock\"\n"), []string{"services.svc.listenOn: malformed address", "control character"}},
		{"unknown scheme", svc("    connector: pg\n    listenOn: udp://:53\n"), []string{"services.svc.listenOn: malformed address"}},
		{"bad socketMode", svc("    connector: pg\n    listenOn: unix:///tmp/x.sock\n    socketMode: rw\n"), []string{"services.svc.socketMode: must be an octal"}},
		{"socketMode on tcp", svc("    connector: pg\n    listenOn: tcp://:1\n    socketMode: \"0600\"\n"), []string{"c.yml:6: services.svc.socketMode: only applies to unix"}},
		{"unknown provider", svc("    connector: pg\n    listenOn: tcp://:1\n    credentials:\n      password:\n        from: vault2\n        get: x\n"), []string{"c.yml:8: services.svc.credentials.password.from: unknown provider \"vault2\" (known: env, file, literal)"}},
		{"from without get", svc("    connector: pg\n    listenOn: tcp://:1\n    credentials:\n      password:\n        from: env\n"), []string{"services.svc.credentials.password.get: missing: provider \"env\" needs an id"}},
		{"get without from", svc("    connector: pg\n    listenOn: tcp://:1\n    credentials:\n      password:\n        get: X\n"), []string{"services.svc.credentials.password.from: missing provider"}},
		{"unknown credential key", svc("    connector: pg\n    listenOn: tcp://:1\n    credentials:\n      password:\n        from: env\n        get: X\n        id: y\n"), []string{"services.svc.credentials.password.id: unknown key"}},
		{"null credential", svc("    connector: pg\n    listenOn: tcp://:1\n    credentials:\n      password:\n"), []string{"services.svc.credentials.password: has no value"}},
		{"credentials list", svc("    connector: pg\n    listenOn: tcp://:1\n    credentials: [a]\n"), []string{"services.svc.credentials: must be a mapping"}},
		{"service not mapping", "version: 2\nservices:\n  svc: pg\n", []string{"services.svc: must be a mapping"}},
		{"bad maxConnections", svc("    connector: pg\n    listenOn: tcp://:1\n    maxConnections: -1\n"), []string{"services.svc.maxConnections: must be a whole number"}},
		{"bad idleTimeout", svc("    connector: pg\n    listenOn: tcp://:1\n    idleTimeout: soon\n"), []string{"services.svc.idleTimeout: must be a duration"}},
		{"bad connectTimeout", svc("    connector: pg\n    listenOn: tcp://:1\n    connectTimeout: 10\n"), []string{"services.svc.connectTimeout: must be a duration"}},
		{"version 2.0", "version: 2.0\nservices: {}\n", []string{`version: unsupported version "2.0"`}},
		{"null provider", svc("    connector: pg\n    listenOn: tcp://:1\n    credentials:\n      password:\n        from: ~\n        get: X\n"), []string{"services.svc.credentials.password.from: missing provider"}},
		{"two documents", good + "---\nversion: 2\n", []string{"more than one YAML document"}},
		{"services block twice", "version: 2\nservices:\n  a:\n    connector: pg\n    listenOn: tcp://:1\nservices:\n  b:\n    connector: pg\n    listenOn: tcp://:2\n",
			[]string{"c.yml:6: services: given twice (first on line 2)"}},
		{"listenOn twice", svc("    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    listenOn: tcp://0.0.0.0:1\n"),
			[]string{"c.yml:6: services.svc.listenOn: given twice (first on line 5)"}},
		{"version twice", "version: 2\nversion: 2\nservices:\n  a:\n    connector: pg\n    listenOn: tcp://:1\n", []string{"c.yml:2: version: given twice"}},
		{"credentials block twice", svc("    connector: pg\n    listenOn: tcp://:1\n    credentials: {a: x}\n    credentials: {b: y}\n"),
			[]string{"c.yml:7: services.svc.credentials: given twice"}},
		{"from twice in a credential", svc("    connector: pg\n    listenOn: tcp://:1\n    credentials:\n      password: {from: env, get: PW, from: literal}\n"),
			[]string{"c.yml:7: services.svc.credentials.password.from: given twice"}},
		{"key twice in the config block", svc("    connector: pg\n    listenOn: tcp://:1\n    config:\n      tls:\n        cert: a\n        cert: b\n"),
			[]string{"c.yml:9: services.svc.config.tls.cert: given twice (first on line 8)"}},
		{"key twice in a list item", svc("    connector: pg\n    listenOn: tcp://:1\n    config:\n      rules:\n        - {a: 1, a: 2}\n"),
			[]string{"services.svc.config.rules[0].a: given twice"}},
		{"key twice in a service named like a credentials path", "version: 2\nservices:\n  x.credentials:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    listenOn: tcp://0.0.0.0:1\n",
			[]string{"c.yml:6: services.x.credentials.listenOn: given twice"}},
		{"service twice keeps its message", "version: 2\nservices:\n  a:\n    connector: pg\n    listenOn: tcp://:1\n  a:\n    connector: pg\n    listenOn: tcp://:2\n",
			[]string{"c.yml:6: services.a: service defined twice"}},
		{"credential twice keeps its message", svc("    connector: pg\n    listenOn: tcp://:1\n    credentials:\n      a: x\n      a: y\n"),
			[]string{"services.svc.credentials.a: credential defined twice"}},
		{"every problem reported", svc("    connector: pg\n    listenOn: tcp://:99999\n    bogus: 1\n"), []string{"services.svc.listenOn: port 99999", "services.svc.bogus: unknown key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yml", []byte(tt.in), testProviders{})
			if err == nil {
				t.Fatal("no error")
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not *config.Error: %v", err, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%s\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

func TestCheckAddresses(t *testing.T) {
	two := func(conn, a, b string) string {
		return "version: 2\nservices:\n  a:\n    connector: " + conn + "\n    listenOn: " + a + "\n  b:\n    connector: " + conn + "\n    listenOn: " + b + "\n"
	}
	httpIDs := func(c string) bool { return c == "basic_auth" }
	tests := []struct {
		name string
		in   string
		want string // "" means no problem
	}{
		{"same address", two("pg", "tcp://127.0.0.1:5432", "tcp://127.0.0.1:5432"), `c.yml:8: services.b.listenOn: address tcp://127.0.0.1:5432 is also used by service "a"`},
		{"wildcard overlaps", two("pg", "tcp://0.0.0.0:5432", "tcp://127.0.0.1:5432"), "services.b.listenOn: address"},
		{"empty host overlaps", two("pg", "tcp://:5432", "tcp://[::1]:5432"), "services.b.listenOn: address"},
		{"same socket", two("pg", "unix:///tmp/s", "unix:///tmp//s"), "services.b.listenOn: address"},
		{"localhost is the loopback address", two("pg", "tcp://localhost:5432", "tcp://127.0.0.1:5432"), "services.b.listenOn: address"},
		{"localhost is the ipv6 loopback address", two("pg", "tcp://[::1]:5432", "tcp://LocalHost:5432"), "services.b.listenOn: address"},
		{"an ip address in two spellings", two("pg", "tcp://[::1]:5432", "tcp://[0:0::1]:5432"), "services.b.listenOn: address"},
		{"ipv6 wildcard overlaps", two("pg", "tcp://[::]:5432", "tcp://127.0.0.1:5432"), "services.b.listenOn: address"},
		{"localhost and another loopback address", two("pg", "tcp://localhost:5432", "tcp://127.0.0.2:5432"), ""},
		{"other host", two("pg", "tcp://127.0.0.1:5432", "tcp://127.0.0.2:5432"), ""},
		{"other port", two("pg", "tcp://127.0.0.1:5432", "tcp://127.0.0.1:5433"), ""},
		{"http services share", two("basic_auth", "tcp://127.0.0.1:8080", "tcp://127.0.0.1:8080"), ""},
		{"http services share a socket", two("basic_auth", "unix:///tmp/h.sock", "unix:///tmp/h.sock"), ""},
		{"http services share a socket with different modes", strings.Replace(two("basic_auth", "unix:///tmp/h.sock", "unix:///tmp/h.sock"),
			"listenOn: unix:///tmp/h.sock\n  b:", "listenOn: unix:///tmp/h.sock\n    socketMode: \"0666\"\n  b:", 1),
			`services.b.socketMode: 0660 differs from the 0666 of service "a" on the same socket`},
		{"http services on overlapping but different addresses", two("basic_auth", "tcp://0.0.0.0:8080", "tcp://127.0.0.1:8080"), "services.b.listenOn: address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("c.yml", []byte(tt.in), testProviders{})
			if err != nil {
				t.Fatal(err)
			}
			probs := CheckAddresses(cfg, httpIDs)
			if tt.want == "" {
				if len(probs) != 0 {
					t.Fatalf("unexpected problems: %v", probs)
				}
				return
			}
			if len(probs) != 1 || !strings.Contains(probs[0].Error(), tt.want) {
				t.Fatalf("problems %v, want one containing %q", probs, tt.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yml"), testProviders{})
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.yml") {
		t.Fatalf("err = %v", err)
	}
}

// TestReadFileRefusesOddFiles: the config path is read without blocking
// and within the size limit, whatever was put there.
func TestReadFileRefusesOddFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.yml")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yml")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, file, want string }{
		{"fifo, nobody writing", fifo, "not a regular file"},
		{"symlink to a device", zero, "not a regular file"},
		{"directory", dir, "not a regular file"},
		{"too large", big, "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { _, err := ReadFile(tc.file); done <- err }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("ReadFile blocked")
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("version: 2\nservices:\n  a: {connector: x, listenOn: 'tcp://[::1]:1'}\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yml", data, testProviders{})
		if err == nil && len(cfg.Services) == 0 {
			t.Fatal("config without services accepted")
		}
	})
}

// TestMergeKeys: YAML merge keys ("<<"), which Secretless's YAML library
// accepted, work at every level, a key written beside the merge wins, and a
// config block that uses anchors from elsewhere reaches its connector
// written out in full.
func TestMergeKeys(t *testing.T) {
	in := `version: 2
services:
  a:
    <<: &common
      connector: pg
      credentials:
        host: db.internal
        username: app
      config: &cfg
        connectTimeout: 5s
        tls: {cert: /c, key: /k}
    listenOn: tcp://127.0.0.1:1
  b:
    <<: *common
    listenOn: tcp://127.0.0.1:2
    credentials:
      host: other.internal
      username: app
    config:
      <<: *cfg
      connectTimeout: 9s
`
	cfg, err := Parse("c.yml", []byte(in), testProviders{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Services) != 2 {
		t.Fatalf("services %+v", cfg.Services)
	}
	t.Run("anchors in a top-level x- key", func(t *testing.T) {
		in := "version: 2\nx-common: &c {host: db.internal, username: app}\nservices:\n  a:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    credentials: {<<: *c, sslmode: disable}\n"
		cfg, err := Parse("c.yml", []byte(in), testProviders{})
		if err != nil {
			t.Fatal(err)
		}
		if c := cfg.Services[0].Credentials; len(c) != 3 || c[0].Get != "db.internal" {
			t.Fatalf("credentials %+v", c)
		}
	})
	a, b := cfg.Services[0], cfg.Services[1]
	if a.Connector != "pg" || b.Connector != "pg" {
		t.Errorf("connectors %q %q", a.Connector, b.Connector)
	}
	if len(b.Credentials) != 2 || b.Credentials[0].Get != "other.internal" {
		t.Errorf("b's own credentials do not win: %+v", b.Credentials)
	}
	if len(a.Credentials) != 2 || a.Credentials[0].Get != "db.internal" {
		t.Errorf("a's merged credentials: %+v", a.Credentials)
	}
	for _, tc := range []struct {
		name string
		svc  Service
		want []string
	}{
		{"anchored block", a, []string{"connectTimeout: 5s", "cert: /c"}},
		{"merged block with an override", b, []string{"connectTimeout: 9s", "cert: /c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(tc.svc.Config)
			if strings.ContainsAny(got, "*&") || strings.Contains(got, "<<") {
				t.Errorf("config block not written out:\n%s", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("config block lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestMergeKeyErrors(t *testing.T) {
	// A config block whose aliases name lists of aliases, six levels of ten.
	laughs := "      l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
	for i := 1; i <= 5; i++ {
		prev := fmt.Sprintf("*l%d", i-1)
		laughs += fmt.Sprintf("      l%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(prev+", ", 10), ", "))
	}
	// Each level merges the one below twelve times over, eight levels deep:
	// a walk along every path would take 12^8 steps.
	bomb := "version: 2\nservices:\n  s:\n    <<: "
	lvl := "&a0 {listenOn: \"tcp://127.0.0.1:1\"}"
	for i := 1; i < 8; i++ {
		lvl = fmt.Sprintf("&a%d {<<: [%s%s]}", i, lvl, strings.Repeat(fmt.Sprintf(", *a%d", i-1), 11))
	}
	bomb += "[" + lvl + strings.Repeat(", *a7", 11) + "]\n    connector: pg\n"
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(bomb), &doc); err != nil {
		t.Fatal(err)
	}
	svc := doc.Content[0].Content[3].Content[1]
	steps := 0
	eachPair(svc, 0, map[*yaml.Node]bool{svc: true}, func(*yaml.Node, *yaml.Node, bool) {
		if steps++; steps > 20 {
			t.Fatalf("merge of merges walked more than %d pairs; each mapping should be visited once", steps-1)
		}
	})
	cfg, err := Parse("c.yml", []byte(bomb), testProviders{})
	if err != nil || len(cfg.Services) != 1 || cfg.Services[0].ListenOn.Raw != "tcp://127.0.0.1:1" {
		t.Fatalf("merge of merges: %v", err)
	}
	tests := []struct {
		name, in string
		want     string
	}{
		{"key written as an alias, twice", "version: 2\nx-k: &lo listenOn\nservices:\n  a:\n    connector: pg\n    listenOn: tcp://127.0.0.1:1\n    *lo : tcp://0.0.0.0:1\n",
			"c.yml:7: services.a.listenOn: given twice (first on line 6)"},
		{"merges nested too deep", deepMerges(12), "merges nested more than 8 deep"},
		{"merge of a scalar", "version: 2\nservices:\n  a:\n    <<: 5\n    connector: pg\n    listenOn: tcp://:1\n",
			"c.yml:4: services.a.<<: must merge a mapping or a list of mappings"},
		{"aliases expanding without end", "version: 2\nservices:\n  a:\n    connector: pg\n    listenOn: tcp://:1\n    config:\n" + laughs,
			"c.yml:7: services.a.config: too large once its aliases are expanded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yml", []byte(tc.in), testProviders{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// deepMerges is a config whose service merges a chain of n mappings, each
// merging the next.
func deepMerges(n int) string {
	var b strings.Builder
	b.WriteString("version: 2\n")
	for i := n; i > 0; i-- {
		if i == n {
			fmt.Fprintf(&b, "x-%d: &m%d {k%d: x}\n", i, i, i)
			continue
		}
		fmt.Fprintf(&b, "x-%d: &m%d {<<: *m%d, k%d: x}\n", i, i, i+1, i)
	}
	b.WriteString("services:\n  a:\n    <<: *m1\n    connector: pg\n    listenOn: tcp://:1\n")
	return b.String()
}
