package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/plugintest"
	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connectortest"
	"github.com/secretless-broker/secretless-broker/sdk/log"
)

// requireIntegration reports whether missing tools must fail the test
// rather than skip it.
func requireIntegration() bool { return os.Getenv("SECRETLESS_REQUIRE_INTEGRATION") == "1" }

func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if requireIntegration() {
			t.Fatalf("%s not found and SECRETLESS_REQUIRE_INTEGRATION=1: %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

// testLogger implements only the methods the connector calls; any other
// call panics (nil embedded interface), which would show up as a failure.
type testLogger struct {
	log.Logger
	t *testing.T
}

func (l testLogger) Debugf(format string, args ...any) { l.t.Logf("debug: "+format, args...) }

type testResources struct{ t *testing.T }

func (testResources) Config() []byte       { return nil }
func (r testResources) Logger() log.Logger { return testLogger{t: r.t} }
func newConnector(t *testing.T) *redisConnector {
	return GetTCPPlugin().NewConnector(testResources{t}).(*redisConnector)
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type redisServer struct {
	port                 int
	password             string
	aclUser, aclPassword string
}

// startRedis runs a private password-protected redis-server with one extra
// ACL user and stops it when the test ends.
func startRedis(t *testing.T) redisServer {
	t.Helper()
	bin := lookPath(t, "redis-server")
	s := redisServer{
		port:        freePort(t),
		password:    "pw-" + randomHex(t, 12),
		aclUser:     "app",
		aclPassword: "acl-" + randomHex(t, 12),
	}
	dir := t.TempDir()
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--requirepass", s.password,
		"--user", s.aclUser, "on", ">"+s.aclPassword, "~*", "&*", "+@all",
		"--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("redis-server exited early:\n%s", out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server not ready on %s: %v\n%s", addr, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s redisServer) creds(user, password string) connector.CredentialValuesByID {
	c := connector.CredentialValuesByID{
		"host":     []byte("127.0.0.1"),
		"port":     []byte(strconv.Itoa(s.port)),
		"password": []byte(password),
	}
	if user != "" {
		c["username"] = []byte(user)
	}
	return c
}

// clientPair returns both ends of a loopback TCP connection, standing in for
// the client's connection to the broker's listener.
func clientPair(t *testing.T) (brokerSide, appSide net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appSide, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	brokerSide, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { appSide.Close(); brokerSide.Close() })
	return brokerSide, appSide
}

// do sends one command and returns its reply line (bulk strings: the value).
func do(t *testing.T, conn net.Conn, r *bufio.Reader, args ...string) string {
	t.Helper()
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(respArray(bs...)); err != nil {
		t.Fatal(err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "$") && line != "$-1" {
		n, _ := strconv.Atoi(line[1:])
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	return line
}

// loadKit loads the plugin with the SDK's test kit, as the broker would.
func loadKit(t *testing.T) *connectortest.TCP {
	t.Helper()
	k, err := connectortest.LoadTCP(t, GetTCPPlugin(), connectortest.Options{Info: PluginInfo()})
	if err != nil {
		t.Fatalf("LoadTCP: %v", err)
	}
	return k
}

// kitCreds converts credentials to the kit's form.
func kitCreds(c connector.CredentialValuesByID) connectortest.Credentials {
	out := connectortest.Credentials{}
	for k, v := range c {
		out[k] = string(v)
	}
	return out
}

// TestConnect drives an application connection through the connector and
// the kit's relay to a real redis-server.
func TestConnect(t *testing.T) {
	srv := startRedis(t)

	tests := []struct {
		name           string
		user, password string
	}{
		{name: "default user password", password: srv.password},
		{name: "acl username and password", user: srv.aclUser, password: srv.aclPassword},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, err := loadKit(t).Connect(t, kitCreds(srv.creds(tt.user, tt.password)))
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			r := bufio.NewReader(app)
			if got := do(t, app, r, "PING"); got != "+PONG" {
				t.Errorf("PING = %q, want +PONG", got)
			}
			key, value := "k-"+randomHex(t, 4), "v-"+randomHex(t, 4)
			if got := do(t, app, r, "SET", key, value); got != "+OK" {
				t.Errorf("SET = %q, want +OK", got)
			}
			if got := do(t, app, r, "GET", key); got != value {
				t.Errorf("GET = %q, want %q", got, value)
			}
			if tt.user != "" {
				if got := do(t, app, r, "ACL", "WHOAMI"); got != tt.user {
					t.Errorf("ACL WHOAMI = %q, want %q", got, tt.user)
				}
			}
		})
	}
}

func TestConnectFailures(t *testing.T) {
	srv := startRedis(t)
	wrong := "wrong-" + randomHex(t, 12)

	tests := []struct {
		name      string
		creds     connector.CredentialValuesByID
		secret    string // must appear neither in the error nor on the client
		wantInErr string
	}{
		{name: "wrong password", creds: srv.creds("", wrong), secret: wrong, wantInErr: "WRONGPASS"},
		{name: "wrong acl password", creds: srv.creds(srv.aclUser, wrong), secret: wrong, wantInErr: "WRONGPASS"},
		{name: "acl password for default user", creds: srv.creds("", srv.aclPassword), secret: srv.aclPassword, wantInErr: "WRONGPASS"},
		{name: "missing password", creds: srv.creds("", ""), wantInErr: "password is missing"},
		{
			name:      "missing host",
			creds:     connector.CredentialValuesByID{"password": []byte(srv.password)},
			secret:    srv.password,
			wantInErr: "host is missing",
		},
		{
			name:      "bad port",
			creds:     connector.CredentialValuesByID{"host": []byte("127.0.0.1"), "port": []byte("70000"), "password": []byte(srv.password)},
			secret:    srv.password,
			wantInErr: "not a port number",
		},
		{
			name:      "nothing listening",
			creds:     connector.CredentialValuesByID{"host": []byte("127.0.0.1"), "port": []byte(strconv.Itoa(freePort(t))), "password": []byte(srv.password)},
			secret:    srv.password,
			wantInErr: "cannot reach",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The kit also fails the test if the password shows up in the
			// error, in a log message or in what the client is sent.
			appSide, err := loadKit(t).Connect(t, kitCreds(tt.creds))
			if err == nil {
				t.Fatal("Connect succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantInErr)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error reveals the password: %q", err)
			}

			// The application sees a RESP error as its first reply.
			_ = appSide.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(appSide).ReadString('\n')
			if rerr != nil {
				t.Fatalf("reading client side: %v", rerr)
			}
			if !strings.HasPrefix(line, "-ERR ") || !strings.HasSuffix(line, "\r\n") || strings.Count(line, "\n") != 1 {
				t.Errorf("client got %q, want one RESP error line starting with -ERR", line)
			}
			if tt.secret != "" && strings.Contains(line, tt.secret) {
				t.Errorf("client message reveals the password: %q", line)
			}
		})
	}
}

// TestAuthRedactsEchoedPassword covers a hostile target that echoes the
// password in its error reply.
// TestAuthRedactsEchoedPassword: a hostile target that echoes the password,
// or a variant of it, in its error gets only its error code passed on.
func TestAuthRedactsEchoedPassword(t *testing.T) {
	const password = "hunter2-secret"
	for _, echo := range []string{password, strings.ToUpper(password), password[:len(password)-1], fmt.Sprintf("%x", password)} {
		t.Run(echo, func(t *testing.T) { testEcho(t, password, echo) })
	}
}

func testEcho(t *testing.T, password, echo string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = bufio.NewReader(c).ReadString('\n') // first line of the AUTH array is enough
		_, _ = fmt.Fprintf(c, "-ERR bad password %s\r\n", echo)
	}()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)

	brokerSide, appSide := clientPair(t)
	_, err = newConnector(t).Connect(brokerSide, connector.CredentialValuesByID{
		"host": []byte("127.0.0.1"), "port": []byte(port), "password": []byte(password),
	})
	if err == nil {
		t.Fatal("Connect succeeded, want an error")
	}
	if strings.Contains(err.Error(), echo) || !strings.Contains(err.Error(), "server refused the login (ERR)") {
		t.Errorf("error = %q, want only the error code", err)
	}
	_ = appSide.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(appSide).ReadString('\n')
	if strings.Contains(line, echo) || !strings.Contains(line, "(ERR)") {
		t.Errorf("client got %q; want the error code only", line)
	}
}

func TestRespArray(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "auth", args: []string{"AUTH", "pw"}, want: "*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"},
		{name: "acl auth", args: []string{"AUTH", "u", "p w\r\n"}, want: "*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$5\r\np w\r\n\r\n"},
		{name: "empty arg", args: []string{"ECHO", ""}, want: "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := make([][]byte, len(tt.args))
			for i, a := range tt.args {
				bs[i] = []byte(a)
			}
			if got := string(respArray(bs...)); got != tt.want {
				t.Errorf("respArray = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name    string
		config  string
		wantErr bool
	}{
		{name: "none", config: ""},
		{name: "empty map", config: "{}\n"},
		{name: "null", config: "null\n"},
		{name: "unexpected block", config: "db: 3\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := plugin{}.ValidateConfig([]byte(tt.config))
			if (err != nil) != tt.wantErr {
				t.Errorf("ValidateConfig(%q) = %v, want error %v", tt.config, err, tt.wantErr)
			}
		})
	}
}

func TestPluginInfo(t *testing.T) {
	info := PluginInfo()
	if err := connectortest.CheckPluginInfo(info, sdk.TypeTCPConnector); err != nil {
		t.Fatal(err)
	}
	if info[sdk.KeyID] != "redis" {
		t.Errorf("PluginInfo()[%q] = %q, want %q", sdk.KeyID, info[sdk.KeyID], "redis")
	}
}

// TestBuildsAsPlugin runs the build command the README documents.
func TestBuildsAsPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin; skipped with -short")
	}
	lookPath(t, "gcc")
	goBin := lookPath(t, "go")
	root := plugintest.ModuleRoot(t, goBin)
	out := filepath.Join(t.TempDir(), "redis.so")
	cmd := exec.Command(goBin, "build", "-buildmode=plugin", "-o="+out, "./examples/plugins/redis")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plugin build failed: %v\n%s", err, b)
	}
	plugintest.CheckExports(t, out, "github.com/secretless-broker/secretless-broker/examples/plugins/redis", "PluginInfo", "GetTCPPlugin")
}
