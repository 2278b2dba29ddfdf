package httpproxy

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/connectors/generichttp"
	"github.com/secretless-broker/secretless-broker/internal/logging"
)

// TestLibraryMessagesKeepSecrets: net/http's own messages quote what a
// target sent, which can be the credential the broker injected; neither the
// global logger (an unsolicited response after a HEAD answered with a body)
// nor the proxy's error log (a malformed trailer line) may show it.
func TestLibraryMessagesKeepSecrets(t *testing.T) {
	const token = "T0pS3cretT0ken-xyz"
	// A target that echoes the Authorization header in ways net/http
	// complains about, quoting the bytes.
	addr := rawTarget(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		auth := req.Header.Get("Authorization")
		switch req.URL.Path {
		case "/headbody": // a HEAD answer that carries a body anyway
			body := "you sent Authorization: " + auth
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		case "/badtrailer": // a trailer line without a colon
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n%s\r\n\r\n", auth)
		}
		time.Sleep(200 * time.Millisecond)
	})
	var global syncBuf
	prevOut, prevFlags := log.Writer(), log.Flags()
	logging.CaptureStdlib(slog.New(slog.NewTextHandler(&global, &slog.HandlerOptions{Level: slog.LevelDebug})), slog.LevelWarn)
	defer func() { log.SetOutput(prevOut); log.SetFlags(prevFlags) }()

	fetch := staticFetch(map[string]string{"token": token})
	tests := []struct {
		name, method, path string
		want               string // the library's message, its quoted part stripped (as the text handler quotes it)
	}{
		{"unsolicited response (global log)", http.MethodHead, "/headbody",
			`Unsolicited response received on idle HTTP channel starting with \"[peer data not logged]\"`},
		{"malformed trailer (proxy error log)", http.MethodGet, "/badtrailer",
			`missing colon: \"[peer data not logged]\"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A proxy of its own: no connection is shared with the other case.
			rt, _ := routeFromYAML(t, "g", "authenticateURLsMatching: ['^http://127\\.0\\.0\\.1:']\nheaders:\n  Authorization: 'Bearer {{ .token }}'\n", generichttp.Plugin(), fetch)
			s, logs := startProxy(t, []Route{rt}, Options{})
			req, _ := http.NewRequest(tc.method, "http://"+addr+tc.path, nil)
			if resp, err := proxyClient(s, nil).Do(req); err == nil {
				_, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			all := func() string { return logs.String() + global.String() }
			// The idle connection notices the stray bytes a moment later.
			for deadline := time.Now().Add(3 * time.Second); !strings.Contains(all(), tc.want) && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
			if strings.Contains(all(), token) {
				t.Errorf("the token reached a log:\n%s", all())
			}
			if !strings.Contains(all(), tc.want) {
				t.Errorf("no %q in the logs (the test would prove nothing):\n%s", tc.want, all())
			}
		})
	}
}

// TestHeaderNameShowingSecret: a response header whose name shows the
// injected credential (in Go's canonical case, which changes the letters'
// case) does not reach the client; other headers do.
func TestHeaderNameShowingSecret(t *testing.T) {
	const token = "T0pS3cretT0ken-xyz"
	tg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-"+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), "1")
		w.Header().Set("X-Plain", "kept")
	}))
	defer tg.Close()
	fetch := staticFetch(map[string]string{"token": token})
	rt, _ := routeFromYAML(t, "g", "authenticateURLsMatching: ['^http://127\\.0\\.0\\.1:']\nheaders:\n  Authorization: 'Bearer {{ .token }}'\n", generichttp.Plugin(), fetch)
	s, _ := startProxy(t, []Route{rt}, Options{})
	resp, err := proxyClient(s, nil).Get(tg.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for k := range resp.Header {
		if strings.Contains(strings.ToLower(k), strings.ToLower(token)) {
			t.Errorf("client got header %q", k)
		}
	}
	if resp.Header.Get("X-Plain") != "kept" {
		t.Errorf("other headers lost: %v", resp.Header)
	}
}

// TestRefusedRequestsObserved: requests the proxy refuses before matching
// them to a service (origin form, TRACE, dot segments) reach Observe, so
// the broker's metrics count them.
func TestRefusedRequestsObserved(t *testing.T) {
	var mu sync.Mutex
	got := map[int]int{}
	s, _ := startProxy(t, nil, Options{Observe: func(service string, code int) {
		mu.Lock()
		defer mu.Unlock()
		if service == "(unmatched)" {
			got[code]++
		}
	}})
	send := func(raw string) {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	send("GET /origin-form HTTP/1.1\r\nHost: x\r\n\r\n")
	send("TRACE http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n")
	send("GET http://127.0.0.1:1/a/%2e%2e/b HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n")
	mu.Lock()
	defer mu.Unlock()
	if got[http.StatusBadRequest] != 2 || got[http.StatusMethodNotAllowed] != 1 {
		t.Errorf("observed %v, want two 400s and one 405", got)
	}
}
