package connectortest_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
	"github.com/secretless-broker/secretless-broker/sdk/connectortest"
)

// recorder is a testing.TB that keeps the kit's error reports instead of
// failing, and runs cleanups when told, so a test can check what the kit
// reported about a misbehaving connector.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	errors   []string
	cleanups []func()
}

func newRecorder(t *testing.T) *recorder { return &recorder{TB: t} }

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }

func (r *recorder) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

// finish runs the cleanups, last registered first, and returns the errors.
func (r *recorder) finish() []string {
	r.mu.Lock()
	fs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errors...)
}

// checkReports fails unless the reports contain want (or are empty when
// want is "").
func checkReports(t *testing.T, reports []string, want string) {
	t.Helper()
	joined := strings.Join(reports, "\n")
	if want == "" {
		if len(reports) > 0 {
			t.Errorf("kit reported contract breaches for a well-behaved connector:\n%s", joined)
		}
		return
	}
	if !strings.Contains(joined, "connectortest: contract: ") || !strings.Contains(joined, want) {
		t.Errorf("kit reports = %q, want a contract breach containing %q", joined, want)
	}
}

// lineTarget is a target that wants "LOGIN <password>\n" as its first line,
// answers "OK\n" or "DENIED\n", then echoes lines in upper case.
func lineTarget(t *testing.T, password string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if line != "LOGIN "+password+"\n" {
					fmt.Fprint(c, "DENIED\n")
					return
				}
				fmt.Fprint(c, "OK\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprint(c, strings.ToUpper(line))
				}
			}()
		}
	}()
	return l.Addr().String()
}

// login dials address and logs in with password.
func login(address string, password []byte) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", address, 5*time.Second)
	if err != nil {
		return nil, err
	}
	msg := append(append([]byte("LOGIN "), password...), '\n')
	if _, err := c.Write(msg); err != nil {
		c.Close()
		return nil, err
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return nil, err
	}
	if reply != "OK\n" {
		c.Close()
		return nil, errors.New("login refused")
	}
	return c, nil
}

func tcpPlugin(connect func(net.Conn, connector.CredentialValuesByID) (net.Conn, error)) tcp.Plugin {
	return tcp.PluginFunc(func(connector.Resources) tcp.Connector { return tcp.ConnectorFunc(connect) })
}

// goodTCP logs in to the target named by the address credential.
var goodTCP = tcpPlugin(func(_ net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
	conn, err := login(string(c["address"]), c["password"])
	if err != nil {
		return nil, fmt.Errorf("login to %s: %w", c["address"], err)
	}
	return conn, nil
})

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		return "read error: " + err.Error()
	}
	return line
}

func TestTCPConnect(t *testing.T) {
	const password = "correct-horse"
	addr := lineTarget(t, password)
	creds := connectortest.Credentials{"address": addr, "password": password}

	tests := []struct {
		name       string
		plugin     tcp.Plugin
		creds      connectortest.Credentials
		wantErr    string // "" means Connect must succeed
		wantReport string // "" means no contract breach
		wantClient string // first line the client reads ("" = not checked)
	}{
		{name: "well-behaved connector relays", plugin: goodTCP, creds: creds, wantClient: "HELLO\n"},
		{name: "returned error is not a breach", plugin: goodTCP, creds: connectortest.Credentials{"address": addr, "password": "wrong-one"},
			wantErr: "login refused"},
		{name: "panic", plugin: tcpPlugin(func(net.Conn, connector.CredentialValuesByID) (net.Conn, error) { panic("boom") }),
			creds: creds, wantErr: "Connect panicked: boom", wantReport: "Connect panicked: boom; return an error instead"},
		{name: "neither connection nor error", plugin: tcpPlugin(func(net.Conn, connector.CredentialValuesByID) (net.Conn, error) { return nil, nil }),
			creds: creds, wantErr: "neither", wantReport: "Connect returned neither a connection nor an error"},
		{name: "client connection returned as target", plugin: tcpPlugin(func(c net.Conn, _ connector.CredentialValuesByID) (net.Conn, error) { return c, nil }),
			creds: creds, wantErr: "client connection", wantReport: "returned the client connection as the target"},
		{name: "closed target connection", plugin: tcpPlugin(func(_ net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
			conn, err := login(string(c["address"]), c["password"])
			if err == nil {
				conn.Close()
			}
			return conn, err
		}), creds: creds, wantErr: "unusable target connection", wantReport: "unusable target connection"},
		{name: "closed client connection", plugin: tcpPlugin(func(client net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
			client.Close()
			return login(string(c["address"]), c["password"])
		}), creds: creds, wantErr: "client connection closed", wantReport: "closed the client connection"},
		{name: "secret in error", plugin: tcpPlugin(func(_ net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
			return nil, fmt.Errorf("bad password %s", c["password"])
		}), creds: creds, wantErr: "bad password", wantReport: "the error Connect returned contains the value of credential(s) password"},
		{name: "public credential in error is fine", plugin: tcpPlugin(func(_ net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
			return nil, fmt.Errorf("cannot reach %s", c["address"])
		}), creds: creds, wantErr: "cannot reach " + addr},
		{name: "secret written to client", plugin: tcpPlugin(func(client net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
			fmt.Fprintf(client, "ERR wrong password %s\n", c["password"])
			return nil, errors.New("login failed")
		}), creds: creds, wantErr: "login failed", wantReport: "what Connect wrote to the client connection contains the value of credential(s) password",
			wantClient: "ERR wrong password " + password + "\n"},
		{name: "secret in panic", plugin: tcpPlugin(func(_ net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
			panic("password " + string(c["password"]))
		}), creds: creds, wantErr: "panicked", wantReport: "the panic message contains the value of credential(s) password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t)
			k, err := connectortest.LoadTCP(rec, tt.plugin, connectortest.Options{})
			if err != nil {
				t.Fatalf("LoadTCP: %v", err)
			}
			client, err := k.Connect(rec, tt.creds)
			if tt.wantErr == "" && err != nil {
				t.Errorf("Connect: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Connect error = %v, want one containing %q", err, tt.wantErr)
			}
			if err == nil {
				fmt.Fprint(client, "hello\n")
			}
			if tt.wantClient != "" {
				if got := readLine(t, client); got != tt.wantClient {
					t.Errorf("client read %q, want %q", got, tt.wantClient)
				}
			}
			checkReports(t, rec.finish(), tt.wantReport)
		})
	}
}

// TestTCPCredentialsZeroed: a connector that keeps the credential slice and
// uses it after Connect returns sends zeros, which the target refuses, so
// the author's own check of the target's answer catches it.
func TestTCPCredentialsZeroed(t *testing.T) {
	const password = "correct-horse"
	addr := lineTarget(t, password)
	tests := []struct {
		name string
		lazy bool
		want string
	}{
		{name: "login during Connect works", lazy: false, want: "OK\n"},
		{name: "login after Connect returned sends zeros", lazy: true, want: "DENIED\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tcpPlugin(func(_ net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
				conn, err := net.Dial("tcp", string(c["address"]))
				if err != nil {
					return nil, err
				}
				kept := c["password"] // a reference, not a copy
				send := func() { fmt.Fprintf(conn, "LOGIN %s\n", kept) }
				if tt.lazy {
					go func() { time.Sleep(50 * time.Millisecond); send() }()
				} else {
					send()
				}
				return conn, nil
			})
			k, err := connectortest.LoadTCP(t, p, connectortest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			client, err := k.Connect(t, connectortest.Credentials{"address": addr, "password": password})
			if err != nil {
				t.Fatal(err)
			}
			if got := readLine(t, client); got != tt.want {
				t.Errorf("target answered %q, want %q", got, tt.want)
			}
		})
	}
}

// TestTCPClientSpeaksFirst drives a connector that reads the client's
// startup line before it logs in, with Start.
func TestTCPClientSpeaksFirst(t *testing.T) {
	const password = "correct-horse"
	addr := lineTarget(t, password)
	p := tcpPlugin(func(client net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
		line, err := bufio.NewReader(client).ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("reading startup: %w", err)
		}
		if line != "START\n" {
			return nil, fmt.Errorf("unexpected startup %q", line)
		}
		return login(string(c["address"]), c["password"])
	})
	tests := []struct {
		name    string
		startup string
		wantErr string
	}{
		{name: "expected startup", startup: "START\n"},
		{name: "unexpected startup", startup: "HI\n", wantErr: `unexpected startup "HI\n"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := connectortest.LoadTCP(t, p, connectortest.Options{HandshakeTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			s := k.Start(t, connectortest.Credentials{"address": addr, "password": password})
			fmt.Fprint(s.Client, tt.startup)
			err = s.Wait()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Wait = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprint(s.Client, "ping\n")
			if got := readLine(t, s.Client); got != "PING\n" {
				t.Errorf("got %q, want PING", got)
			}
		})
	}
}

func TestLoadTCP(t *testing.T) {
	info := func(edit func(map[string]string)) map[string]string {
		m := map[string]string{sdk.KeyPluginAPIVersion: sdk.PluginAPIVersion, sdk.KeyType: sdk.TypeTCPConnector, sdk.KeyID: "x", sdk.KeyDescription: "d"}
		if edit != nil {
			edit(m)
		}
		return m
	}
	tests := []struct {
		name       string
		plugin     tcp.Plugin
		opts       connectortest.Options
		wantErr    string
		wantReport string
	}{
		{name: "good", plugin: goodTCP, opts: connectortest.Options{Info: info(nil)}},
		{name: "nil plugin", plugin: nil, wantErr: "GetTCPPlugin returned nil"},
		{name: "missing key", plugin: goodTCP, opts: connectortest.Options{Info: info(func(m map[string]string) { delete(m, sdk.KeyDescription) })},
			wantErr: "missing key(s) description"},
		{name: "bad api version", plugin: goodTCP, opts: connectortest.Options{Info: info(func(m map[string]string) { m[sdk.KeyPluginAPIVersion] = "9" })},
			wantErr: `unsupported pluginAPIVersion "9"`},
		{name: "bad id", plugin: goodTCP, opts: connectortest.Options{Info: info(func(m map[string]string) { m[sdk.KeyID] = "My Conn" })},
			wantErr: `invalid id "My Conn"`},
		{name: "http type loaded as tcp", plugin: goodTCP, opts: connectortest.Options{Info: info(func(m map[string]string) { m[sdk.KeyType] = sdk.TypeHTTPConnector })},
			wantErr: `type is "connector.http", but the plugin is loaded as "connector.tcp"`},
		{name: "config rejected", plugin: validating{goodTCP, func([]byte) error { return errors.New("unknown key db") }},
			opts: connectortest.Options{Config: []byte("db: 1\n")}, wantErr: "config rejected: unknown key db"},
		{name: "config accepted", plugin: validating{goodTCP, func(b []byte) error {
			if string(b) != "db: 1\n" {
				return fmt.Errorf("got %q", b)
			}
			return nil
		}}, opts: connectortest.Options{Config: []byte("db: 1\n")}},
		{name: "validate panics", plugin: validating{goodTCP, func([]byte) error { panic("bad yaml") }},
			wantErr: "ValidateConfig panicked", wantReport: "ValidateConfig panicked: bad yaml"},
		{name: "NewConnector panics", plugin: tcp.PluginFunc(func(connector.Resources) tcp.Connector { panic("no config") }),
			wantErr: "NewConnector panicked", wantReport: "NewConnector panicked: no config"},
		{name: "NewConnector returns nil", plugin: tcp.PluginFunc(func(connector.Resources) tcp.Connector { return nil }),
			wantErr: "NewConnector returned nil", wantReport: "NewConnector returned nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t)
			_, err := connectortest.LoadTCP(rec, tt.plugin, tt.opts)
			if tt.wantErr == "" && err != nil {
				t.Errorf("LoadTCP: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("LoadTCP error = %v, want one containing %q", err, tt.wantErr)
			}
			checkReports(t, rec.finish(), tt.wantReport)
		})
	}
}

// validating adds a ValidateConfig method to a plugin.
type validating struct {
	tcp.Plugin
	validate func([]byte) error
}

func (v validating) ValidateConfig(b []byte) error { return v.validate(b) }

// TestTCPRelayedBytesNotBlamed: bytes the target sends after Connect
// returned are relayed, not written by the connector, so a secret among
// them is not reported.
func TestTCPRelayedBytesNotBlamed(t *testing.T) {
	const password = "31415926" // the target's upper-case echo leaves it unchanged
	addr := lineTarget(t, password)
	tests := []struct {
		name string
		send string
	}{
		{name: "secret echoed by the target", send: password + "\n"},
		{name: "ordinary line", send: "plain\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t)
			k, err := connectortest.LoadTCP(rec, goodTCP, connectortest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			client, err := k.Connect(rec, connectortest.Credentials{"address": addr, "password": password})
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprint(client, tt.send)
			if got := readLine(t, client); got != strings.ToUpper(tt.send) {
				t.Errorf("echo = %q, want %q", got, strings.ToUpper(tt.send))
			}
			checkReports(t, rec.finish(), "")
		})
	}
}

// credsChecker requires a password credential and a numeric literal port.
type credsChecker struct{ tcp.Plugin }

func (credsChecker) ValidateCredentials(config []byte, names []string, literal connector.CredentialValuesByID) error {
	if !strings.Contains(strings.Join(names, ","), "password") {
		return errors.New("credential password is missing")
	}
	if p, ok := literal["port"]; ok && strings.Trim(string(p), "0123456789") != "" {
		return fmt.Errorf("credential port %q is not a number", p)
	}
	if pw, ok := literal["password"]; ok && string(pw) == "panic" {
		panic("cannot check")
	}
	if pw, ok := literal["password"]; ok {
		return fmt.Errorf("literal password %s not allowed", pw)
	}
	return nil
}

func TestLoadValidatesCredentials(t *testing.T) {
	tests := []struct {
		name       string
		opts       connectortest.Options
		wantErr    string
		wantReport string
	}{
		{name: "not declared: not called", opts: connectortest.Options{}},
		{name: "declared", opts: connectortest.Options{Declared: []string{"host", "password"}}},
		{name: "missing", opts: connectortest.Options{Declared: []string{"host"}}, wantErr: "credentials rejected: credential password is missing"},
		{name: "literal only counts as declared", opts: connectortest.Options{Literal: connectortest.Credentials{"port": "6379"}, Declared: []string{"password"}}},
		{name: "bad literal", opts: connectortest.Options{Declared: []string{"password"}, Literal: connectortest.Credentials{"port": "63x9"}},
			wantErr: `credential port "63x9" is not a number`},
		{name: "panics", opts: connectortest.Options{Literal: connectortest.Credentials{"password": "panic"}},
			wantErr: "ValidateCredentials panicked", wantReport: "ValidateCredentials panicked: cannot check"},
		{name: "secret in error", opts: connectortest.Options{Literal: connectortest.Credentials{"password": "hunter22"}},
			wantErr: "not allowed", wantReport: "the error ValidateCredentials returned contains the value of credential(s) password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t)
			_, err := connectortest.LoadTCP(rec, credsChecker{goodTCP}, tt.opts)
			if tt.wantErr == "" && err != nil {
				t.Errorf("LoadTCP: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("LoadTCP error = %v, want one containing %q", err, tt.wantErr)
			}
			checkReports(t, rec.finish(), tt.wantReport)
		})
	}
}

// refuser tells refused clients why, in its line protocol.
type refuser struct {
	tcp.Connector
	panics bool
}

func (r refuser) Refuse(c net.Conn, reason tcp.RefuseReason) {
	if r.panics {
		panic("no words")
	}
	fmt.Fprintf(c, "BUSY %s\n", reason)
}

func TestRefuse(t *testing.T) {
	tests := []struct {
		name        string
		connector   tcp.Connector
		implemented bool
		want        string
		wantReport  string
	}{
		{name: "refuser", connector: refuser{}, implemented: true, want: "BUSY too many connections for this service\n"},
		{name: "plain connector", connector: tcp.ConnectorFunc(func(net.Conn, connector.CredentialValuesByID) (net.Conn, error) { return nil, nil }),
			want: "read error: EOF"},
		{name: "panicking refuser", connector: refuser{panics: true}, implemented: true, want: "read error: EOF", wantReport: "Refuse panicked: no words"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t)
			k, err := connectortest.LoadTCP(rec, tcp.PluginFunc(func(connector.Resources) tcp.Connector { return tt.connector }), connectortest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			client, implemented := k.Refuse(rec, tcp.RefuseTooManyConnections)
			if implemented != tt.implemented {
				t.Errorf("implemented = %v, want %v", implemented, tt.implemented)
			}
			if got := readLine(t, client); got != tt.want {
				t.Errorf("client read %q, want %q", got, tt.want)
			}
			checkReports(t, rec.finish(), tt.wantReport)
		})
	}
}
