package broker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/secretless-broker/secretless-broker/internal/registry"
	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// The "echo" test connector dials the address in its "address" credential
// and sends the "token" credential as a first line, so the target can show
// which credential a session used. It is registered like any plugin.
var echoEntry = registry.Entry{ID: "echo", Type: sdk.TypeTCPConnector, Source: "test", TCP: tcp.PluginFunc(
	func(connector.Resources) tcp.Connector {
		return tcp.ConnectorFunc(func(_ net.Conn, c connector.CredentialValuesByID) (net.Conn, error) {
			t, err := net.Dial("tcp", string(c["address"]))
			if err != nil {
				return nil, err
			}
			if _, err := t.Write(append(append([]byte{}, c["token"]...), '\n')); err != nil {
				t.Close()
				return nil, err
			}
			return t, nil
		})
	})}

// target echoes everything, after the first line, prefixed by that line.
func target(t *testing.T) string {
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
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func svcYAML(name, addr, tgt, tokenEnv string) string {
	return "  " + name + ":\n    connector: echo\n    listenOn: tcp://" + addr + "\n    credentials:\n      address: " + tgt +
		"\n      token:\n        from: env\n        get: " + tokenEnv + "\n"
}

type running struct {
	b      *Broker
	logs   *syncBuf
	reload chan struct{}
	cancel context.CancelFunc
	done   chan error
	file   string
}

func start(t *testing.T, cfg string) *running {
	t.Helper()
	return startWith(t, cfg, []registry.Entry{echoEntry})
}

// startWith starts a broker on cfg with extra connectors besides the
// built-in ones.
func startWith(t *testing.T, cfg string, extra []registry.Entry) *running {
	t.Helper()
	file := filepath.Join(t.TempDir(), "secretless.yml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	b, err := Prepare(Options{ConfigFile: file, PluginDir: filepath.Join(t.TempDir(), "none"), HealthAddr: "127.0.0.1:0",
		ShutdownTimeout: 5 * time.Second, Extra: extra,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{b: b, logs: logs, reload: make(chan struct{}), cancel: cancel, done: make(chan error, 1), file: file}
	go func() { r.done <- b.Serve(ctx, r.reload) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("broker did not stop")
		}
	})
	waitReady(t, b, 200)
	return r
}

func waitReady(t *testing.T, b *Broker, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + b.HealthAddr().String() + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready never answered %d", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// session opens a connection and returns a function that sends a line and
// returns the echoed line.
func session(t *testing.T, addr string) (net.Conn, func(string) (string, error)) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	buf := make([]byte, 0, 256)
	read := func() (string, error) {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		one := make([]byte, 1)
		buf = buf[:0]
		for {
			if _, err := c.Read(one); err != nil {
				return string(buf), err
			}
			if one[0] == '\n' {
				return string(buf), nil
			}
			buf = append(buf, one[0])
		}
	}
	return c, func(line string) (string, error) {
		if line != "" {
			if _, err := c.Write([]byte(line + "\n")); err != nil {
				return "", err
			}
		}
		return read()
	}
}

func (r *running) rewrite(t *testing.T, cfg string) {
	t.Helper()
	if err := os.WriteFile(r.file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReload(t *testing.T) {
	tgt := target(t)
	keepAddr, changeAddr, removeAddr, addAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	t.Setenv("TOKEN_A", "alpha")
	t.Setenv("TOKEN_B", "bravo")
	cfg1 := "version: 2\nservices:\n" + svcYAML("keep", keepAddr, tgt, "TOKEN_A") + svcYAML("change", changeAddr, tgt, "TOKEN_A") + svcYAML("remove", removeAddr, tgt, "TOKEN_A")
	r := start(t, cfg1)

	_, keep := session(t, keepAddr)
	if got, err := keep(""); err != nil || got != "alpha" {
		t.Fatalf("keep first line = %q, %v", got, err)
	}
	_, change := session(t, changeAddr)
	if got, _ := change(""); got != "alpha" {
		t.Fatalf("change first line = %q", got)
	}
	_, remove := session(t, removeAddr)
	if got, _ := remove(""); got != "alpha" {
		t.Fatalf("remove first line = %q", got)
	}

	t.Run("bad config keeps the running one", func(t *testing.T) {
		r.rewrite(t, "version: 2\nservices:\n  broken:\n    connector: nope\n    listenOn: tcp://127.0.0.1:1\n")
		if err := r.b.Reload(); err == nil || !strings.Contains(err.Error(), `unknown connector "nope"`) {
			t.Fatalf("reload err = %v", err)
		}
		if got, err := keep("still here"); err != nil || got != "still here" {
			t.Fatalf("open session after bad reload: %q, %v", got, err)
		}
		_, fresh := session(t, removeAddr)
		if got, err := fresh(""); err != nil || got != "alpha" {
			t.Fatalf("new connection after bad reload: %q, %v", got, err)
		}
		if v := testutil.ToFloat64(r.b.Metrics().Reloads.WithLabelValues("failed")); v != 1 {
			t.Errorf("failed reloads = %v", v)
		}
	})

	t.Run("good config", func(t *testing.T) {
		// keep: unchanged (but moved to another line); change: new token;
		// remove: gone; add: new.
		cfg2 := "version: 2\nservices:\n" + svcYAML("add", addAddr, tgt, "TOKEN_A") + svcYAML("change", changeAddr, tgt, "TOKEN_B") + svcYAML("keep", keepAddr, tgt, "TOKEN_A")
		r.rewrite(t, cfg2)
		r.reload <- struct{}{}
		deadline := time.Now().Add(5 * time.Second)
		for testutil.ToFloat64(r.b.Metrics().Reloads.WithLabelValues("ok")) != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("reload did not happen:\n%s", r.logs)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for name, f := range map[string]func(string) (string, error){"keep": keep, "change": change, "remove": remove} {
			if got, err := f("open " + name); err != nil || got != "open "+name {
				t.Errorf("open %s session after reload: %q, %v", name, got, err)
			}
		}
		_, changed := session(t, changeAddr)
		if got, err := changed(""); err != nil || got != "bravo" {
			t.Errorf("changed service serves %q, %v; want the new token", got, err)
		}
		_, added := session(t, addAddr)
		if got, err := added(""); err != nil || got != "alpha" {
			t.Errorf("added service: %q, %v", got, err)
		}
		if c, err := net.DialTimeout("tcp", removeAddr, time.Second); err == nil {
			c.Close()
			t.Error("removed service still accepts")
		}
		if strings.Count(r.logs.String(), `service listening" service=keep`) != 1 {
			t.Errorf("unchanged service was restarted:\n%s", r.logs)
		}
	})
}

func TestShutdownDrains(t *testing.T) {
	tgt := target(t)
	addr := freeAddr(t)
	t.Setenv("TOKEN_A", "alpha")
	r := start(t, "version: 2\nservices:\n"+svcYAML("s", addr, tgt, "TOKEN_A"))
	c, line := session(t, addr)
	if got, _ := line(""); got != "alpha" {
		t.Fatalf("first line %q", got)
	}
	r.cancel()
	waitReady(t, r.b, 503)
	select {
	case err := <-r.done:
		t.Fatalf("Serve returned with a session open: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if got, err := line("during drain"); err != nil || got != "during drain" {
		t.Fatalf("session during drain: %q, %v", got, err)
	}
	c.Close()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatal(err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the session ended")
	}
}

func TestNoSecretInLogsOrMetrics(t *testing.T) {
	tgt := target(t)
	addr := freeAddr(t)
	const secret = "s3cr3t-token-value"
	t.Setenv("TOKEN_S", secret)
	r := start(t, "version: 2\nservices:\n"+svcYAML("s", addr, tgt, "TOKEN_S")+svcYAML("bad", freeAddr(t), "127.0.0.1:1", "TOKEN_S"))
	_, line := session(t, addr)
	if got, _ := line(""); got != secret {
		t.Fatalf("first line %q", got)
	}
	if got, _ := line("x"); got != "x" {
		t.Fatal("relay broken")
	}
	badAddr := r.b.Addr("bad").String()
	c, err := net.Dial("tcp", badAddr)
	if err == nil {
		_, _ = c.Read(make([]byte, 1))
		c.Close()
	}
	resp, err := http.Get("http://" + r.b.HealthAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `secretless_connections_accepted_total{service="s"} 1`) {
		t.Errorf("metrics lack the accepted connection:\n%s", body)
	}
	if strings.Contains(string(body), secret) {
		t.Error("secret in metrics")
	}
	r.cancel()
	<-r.done
	r.done <- nil
	if strings.Contains(r.logs.String(), secret) {
		t.Errorf("secret in debug log:\n%s", r.logs)
	}
	if !strings.Contains(r.logs.String(), "connection refused") {
		t.Errorf("failed connection not logged:\n%s", r.logs)
	}
}

// TestStartFailsWithHealthServer: a listener that cannot open, with the
// health server on, fails start-up with the error only (the health server's
// goroutine once raced with the cleanup and could panic), and the health
// port is closed again. Repeated, as the race needs luck.
func TestStartFailsWithHealthServer(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "s.yml")
	t.Setenv("T", "x")
	if err := os.WriteFile(file, []byte("version: 2\nservices:\n"+svcYAML("b", busy.Addr().String(), "x", "T")), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		health := freeAddr(t)
		b, err := Prepare(Options{ConfigFile: file, PluginDir: t.TempDir(), HealthAddr: health, Extra: []registry.Entry{echoEntry},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("err = %v", err)
		}
		l, err := net.Listen("tcp", health)
		if err != nil {
			t.Fatalf("health port left open: %v", err)
		}
		l.Close()
	}
}

func TestStartFailsCleanly(t *testing.T) {
	t.Setenv("T", "x")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "s.yml")
	first := freeAddr(t)
	cfg := "version: 2\nservices:\n" + svcYAML("a", first, "x", "T") + svcYAML("b", busy.Addr().String(), "x", "T")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := Prepare(Options{ConfigFile: file, PluginDir: t.TempDir(), Extra: []registry.Entry{echoEntry}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Start()
	if err == nil || !strings.Contains(err.Error(), "service b: listen on tcp://"+busy.Addr().String()+": address already in use") {
		t.Fatalf("err = %v", err)
	}
	// The listener opened before the failure was closed again.
	l, err := net.Listen("tcp", first)
	if err != nil {
		t.Fatalf("first listener left open: %v", err)
	}
	l.Close()
}

// TestReloadRefusedWhenAddressTaken: a reload that moves a service to an
// address another process holds is refused as a whole, before anything
// stops: the running services keep serving, on their old addresses.
func TestReloadRefusedWhenAddressTaken(t *testing.T) {
	tgt := target(t)
	t.Setenv("TOKEN_A", "alpha")
	moveAddr, addAddr := freeAddr(t), freeAddr(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	r := start(t, "version: 2\nservices:\n"+svcYAML("move", moveAddr, tgt, "TOKEN_A"))
	_, open := session(t, moveAddr)
	if got, _ := open(""); got != "alpha" {
		t.Fatalf("first line %q", got)
	}
	r.rewrite(t, "version: 2\nservices:\n"+svcYAML("move", busy.Addr().String(), tgt, "TOKEN_A")+svcYAML("add", addAddr, tgt, "TOKEN_A"))
	err = r.b.Reload()
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("reload err = %v", err)
	}
	if v := testutil.ToFloat64(r.b.Metrics().Reloads.WithLabelValues("failed")); v != 1 {
		t.Errorf("failed reloads = %v", v)
	}
	if got, err := open("still open"); err != nil || got != "still open" {
		t.Errorf("open session: %q, %v", got, err)
	}
	_, fresh := session(t, moveAddr)
	if got, err := fresh(""); err != nil || got != "alpha" {
		t.Errorf("old address after the refused reload: %q, %v", got, err)
	}
	if c, err := net.DialTimeout("tcp", addAddr, time.Second); err == nil {
		c.Close()
		t.Error("the refused reload's new service listens")
	}
	waitReady(t, r.b, 200)
}

// panicValidator's ValidateCredentials panics with the value of its "pin"
// credential in the panic's text, as strconv.Atoi's error would.
type panicValidator struct{ tcp.Plugin }

func (panicValidator) ValidateCredentials(_ []byte, _ []string, v connector.CredentialValuesByID) error {
	panic(fmt.Sprintf("parsing %q: invalid syntax", v["pin"]))
}

// TestValidatePanicRedacted: a connector that panics while validating
// credentials has its panic reported at load time without the values it
// quotes, whether they are written in the file or come from env or file.
func TestValidatePanicRedacted(t *testing.T) {
	const secret = "TopSecretHunter2"
	t.Setenv("PIN", secret)
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	entry := registry.Entry{ID: "panicval", Type: sdk.TypeTCPConnector, Source: "test", TCP: panicValidator{echoEntry.TCP}}
	tests := []struct{ name, pin string }{
		{"literal", secret},
		{"env", "{from: env, get: PIN}"},
		{"file", "{from: file, get: " + pinFile + "}"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "s.yml")
			cfg := "version: 2\nservices:\n  svc:\n    connector: panicval\n    listenOn: tcp://" + freeAddr(t) + "\n    credentials:\n      pin: " + tc.pin + "\n"
			if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Prepare(Options{ConfigFile: file, PluginDir: t.TempDir(), Extra: []registry.Entry{entry}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err == nil || !strings.Contains(err.Error(), "connector panicked while validating credentials") {
				t.Fatalf("err = %v, want the panic reported", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the panic's text shows the secret: %v", err)
			}
		})
	}
}

// TestLimitAcrossReload: a changed service's maxConnections counts the
// sessions its old version still drains after a reload, and the active
// gauge counts them too.
func TestLimitAcrossReload(t *testing.T) {
	tgt := target(t)
	addr := freeAddr(t)
	t.Setenv("TOKEN_A", "alpha")
	t.Setenv("TOKEN_B", "bravo")
	limited := func(token string) string {
		return "version: 2\nservices:\n" + svcYAML("lim", addr, tgt, token) + "    maxConnections: 1\n"
	}
	r := start(t, limited("TOKEN_A"))
	old, first := session(t, addr)
	if got, err := first(""); err != nil || got != "alpha" {
		t.Fatalf("first session: %q, %v", got, err)
	}
	r.rewrite(t, limited("TOKEN_B"))
	if err := r.b.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got := testutil.ToFloat64(r.b.Metrics().ConnectionsActive.WithLabelValues("lim")); got != 1 {
		t.Errorf("active after the reload = %v, want the old session's 1", got)
	}
	_, over := session(t, addr)
	if got, err := over(""); err == nil {
		t.Fatalf("a second session was served (%q) with maxConnections 1 and the old one open", got)
	}
	if got, err := first("still"); err != nil || got != "still" {
		t.Fatalf("old session after the reload: %q, %v", got, err)
	}
	old.Close()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(r.b.Metrics().ConnectionsActive.WithLabelValues("lim")) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the old session still counts after it closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, next := session(t, addr)
	if got, err := next(""); err != nil || got != "bravo" {
		t.Fatalf("after the old session ended: %q, %v; want the new token", got, err)
	}
}

// TestReloadMoveToATakenAddress: a service moved to a wider address that it
// cannot take (another process holds a part of it) makes a partial reload.
// Its old version then serves its old config on its old address again,
// instead of being down; but a service renamed as it moved is not brought
// back under its old, removed name.
func TestReloadMoveToATakenAddress(t *testing.T) {
	tests := []struct {
		name, newName string
		wantOld       bool // the old config is served on the old address
	}{
		{"moved", "mv", true},
		{"renamed and moved", "other", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tgt := target(t)
			addr := freeAddr(t)
			_, port, _ := net.SplitHostPort(addr)
			other, err := net.Listen("tcp", "127.0.0.2:"+port)
			if err != nil {
				t.Fatalf("listen on 127.0.0.2 (Linux routes 127.0.0.0/8 to lo): %v", err)
			}
			defer other.Close()
			t.Setenv("TOKEN_A", "alpha")
			t.Setenv("TOKEN_B", "bravo")
			r := start(t, "version: 2\nservices:\n"+svcYAML("mv", addr, tgt, "TOKEN_A"))
			r.rewrite(t, "version: 2\nservices:\n"+svcYAML(tc.newName, "0.0.0.0:"+port, tgt, "TOKEN_B"))
			if err := r.b.Reload(); err == nil || !strings.Contains(err.Error(), "could not start: "+tc.newName) {
				t.Fatalf("reload: %v, want a partial reload naming %s", err, tc.newName)
			}
			rolledBack := strings.Contains(r.logs.String(), "it serves its old config on its old address")
			if rolledBack != tc.wantOld {
				t.Errorf("rollback logged: %v, want %v:\n%s", rolledBack, tc.wantOld, r.logs)
			}
			if !tc.wantOld {
				if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
					c.Close()
					t.Fatal("the removed service is listening again")
				}
				return
			}
			_, s := session(t, addr)
			if got, err := s(""); err != nil || got != "alpha" {
				t.Fatalf("after the failed move: %q, %v; want the old config served on the old address", got, err)
			}
		})
	}
}
