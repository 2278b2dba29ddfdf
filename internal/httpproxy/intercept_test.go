package httpproxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// interceptProxy runs a proxy with CONNECT interception, a bearer route for
// the TLS target, and returns the CA the client must trust.
func interceptProxy(t *testing.T) (*Server, *target, *testCA) {
	t.Helper()
	targetCA := newTestCA(t, "target CA")
	targetCAFile, _ := targetCA.files(t)
	interceptCA := newTestCA(t, "intercept CA")
	certFile, keyFile := interceptCA.files(t)
	tg := newTarget(t, targetCA, nil)
	block := fmt.Sprintf("authenticateURLsMatching: '^https://127\\.0\\.0\\.1:'\ncaBundle: %s\ninterceptConnect:\n  caCert: %s\n  caKey: %s\n",
		targetCAFile, certFile, keyFile)
	rt, cfg := routeFromYAML(t, "svc", block, bearerPlugin, staticFetch(map[string]string{"token": "inside-tunnel"}))
	opts, err := ListenerOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := startProxy(t, []Route{rt}, opts)
	return s, tg, interceptCA
}

func TestConnectInterception(t *testing.T) {
	s, tg, ica := interceptProxy(t)
	c := proxyClient(s, ica.pool())

	t.Run("credentials injected inside the tunnel", func(t *testing.T) {
		for i := range 3 { // several requests on one tunnel
			req, _ := http.NewRequest(http.MethodPost, "https://"+tg.hostPort()+"/in?i="+fmt.Sprint(i), strings.NewReader("body"))
			req.Header.Set("Authorization", "Bearer client-fake")
			e := doEcho(t, c, req)
			if got := e.Header["Authorization"]; len(got) != 1 || got[0] != "Bearer inside-tunnel" {
				t.Fatalf("Authorization = %q", got)
			}
			if !e.TLS || e.Host != tg.hostPort() || e.BodyLen != 4 {
				t.Fatalf("target saw %+v", e)
			}
		}
	})
	t.Run("client that does not trust the CA fails", func(t *testing.T) {
		_, err := proxyClient(s, nil).Get("https://" + tg.hostPort() + "/")
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want a certificate error", err)
		}
	})
	t.Run("unmatched host refused inside the tunnel", func(t *testing.T) {
		resp, err := c.Get("https://localhost:" + strings.Split(tg.hostPort(), ":")[1] + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})
}

// eagerConn sends the CONNECT request in the same write as the TLS
// ClientHello, and skips the proxy's 200 before handing reads to TLS.
type eagerConn struct {
	net.Conn
	connect  []byte
	sent     bool
	br       *bufio.Reader
	status   string
	skipped  bool
	firstLen int
}

func (e *eagerConn) Write(p []byte) (int, error) {
	if !e.sent {
		e.sent = true
		buf := append(append([]byte{}, e.connect...), p...)
		e.firstLen = len(buf)
		if _, err := e.Conn.Write(buf); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return e.Conn.Write(p)
}

func (e *eagerConn) Read(p []byte) (int, error) {
	if !e.skipped {
		e.skipped = true
		e.br = bufio.NewReader(e.Conn)
		resp, err := http.ReadResponse(e.br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			return 0, err
		}
		e.status = resp.Status
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("CONNECT: %s", resp.Status)
		}
	}
	return e.br.Read(p)
}

func TestConnectBytesBehindRequestKept(t *testing.T) {
	s, tg, ica := interceptProxy(t)
	raw, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	ec := &eagerConn{Conn: raw, connect: []byte("CONNECT " + tg.hostPort() + " HTTP/1.1\r\nHost: " + tg.hostPort() + "\r\n\r\n")}
	tc := tls.Client(ec, &tls.Config{RootCAs: ica.pool(), ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake through eager CONNECT: %v", err)
	}
	if ec.firstLen <= len(ec.connect) {
		t.Fatalf("ClientHello was not sent with the CONNECT request")
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+tg.hostPort()+"/eager", nil)
	if err := req.Write(tc); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	var e echoed
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if e.Header.Get("Authorization") != "Bearer inside-tunnel" || e.URI != "/eager" {
		t.Fatalf("target saw %+v", e)
	}
	if !bytes.HasPrefix([]byte(ec.status), []byte("200")) {
		t.Fatalf("CONNECT status %q", ec.status)
	}
}
