package httpproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/connectors/generichttp"
)

// TestSecretsComingBack: what the target sends back that repeats an
// injected credential (a redirect that keeps the query, an error quoting
// the request) reaches neither the client nor the log.
func TestSecretsComingBack(t *testing.T) {
	const key = "QueryKey+Secret/77 &x" // characters a query must escape
	fetch := staticFetch(map[string]string{"key": key})
	redirect := newTarget(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailer":
			w.Header().Set("Trailer", "X-Echo")
			_, _ = io.WriteString(w, "body\n")
			w.Header().Set("X-Echo", r.URL.RawQuery)
			w.Header().Set(http.TrailerPrefix+"X-Undeclared", r.URL.Query().Get("apikey"))
		case "/early":
			w.Header().Set("Link", "</s?"+r.URL.RawQuery+">; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			_, _ = io.WriteString(w, "ok\n")
		default:
			http.Redirect(w, r, r.URL.Path+"/?"+r.URL.RawQuery, http.StatusMovedPermanently)
		}
	}))
	// A target that answers the request line back instead of HTTP.
	echoLine := rawTarget(t, func(c net.Conn) {
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "%s\r\n\r\n", strings.TrimSpace(line))
	})
	block := "authenticateURLsMatching: ['^http://127\\.0\\.0\\.1:']\nqueryParams:\n  apikey: '{{ .key }}'\n"
	rt, _ := routeFromYAML(t, "q", block, generichttp.Plugin(), fetch)
	s, logs := startProxy(t, []Route{rt}, Options{})
	c := proxyClient(s, nil)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var early []string // Link headers of informational responses
	trace := &httptrace.ClientTrace{Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
		early = append(early, h.Values("Link")...)
		return nil
	}}
	tests := []struct {
		name, url string
		check     func(t *testing.T, resp *http.Response, body string)
	}{
		{"redirect keeping the query", "http://" + redirect.hostPort() + "/r?x=1", func(t *testing.T, resp *http.Response, _ string) {
			if loc := resp.Header.Get("Location"); !strings.Contains(loc, "apikey=[REDACTED]") {
				t.Errorf("Location %q", loc)
			}
			if resp.Header.Get("Date") == "" || resp.Header.Get("Content-Type") == "" {
				t.Errorf("framing headers lost: %v", resp.Header)
			}
		}},
		{"trailers", "http://" + redirect.hostPort() + "/trailer?x=1", func(t *testing.T, resp *http.Response, _ string) {
			if got := resp.Trailer.Get("X-Echo"); !strings.Contains(got, "[REDACTED]") {
				t.Errorf("trailer %q", got)
			}
			for k, v := range resp.Trailer {
				if strings.Contains(strings.Join(v, " "), key) || strings.Contains(strings.Join(v, " "), url.QueryEscape(key)) {
					t.Errorf("trailer %s holds the key: %q", k, v)
				}
			}
		}},
		{"early hints", "http://" + redirect.hostPort() + "/early?x=1", func(t *testing.T, resp *http.Response, _ string) {
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status %d", resp.StatusCode)
			}
		}},
		{"transport error quoting the target", "http://" + echoLine + "/x?a=1", func(t *testing.T, resp *http.Response, body string) {
			if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "[REDACTED]") {
				t.Errorf("status %d body %q", resp.StatusCode, body)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, tc.url, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, form := range []string{key, url.QueryEscape(key)} {
				for k, v := range resp.Header {
					if strings.Contains(strings.Join(v, " "), form) {
						t.Errorf("response header %s holds the key: %q", k, v)
					}
				}
				if strings.Contains(string(b), form) {
					t.Errorf("response body holds the key: %q", b)
				}
			}
			tc.check(t, resp, string(b))
		})
	}
	if len(early) == 0 {
		t.Error("no early hints reached the client")
	}
	for _, l := range early {
		if strings.Contains(l, url.QueryEscape(key)) || !strings.Contains(l, "[REDACTED]") {
			t.Errorf("early hint Link %q", l)
		}
	}
	if strings.Contains(logs.String(), key) || strings.Contains(logs.String(), url.QueryEscape(key)) {
		t.Errorf("log holds the key:\n%s", logs)
	}
}

// TestStalledBodies: a client that stops sending its body loses the
// request, and its connection, at the request timeout or after the body
// idle timeout, instead of holding them for good.
func TestStalledBodies(t *testing.T) {
	sink := newTarget(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	fetch := staticFetch(map[string]string{"token": "t0ken-x"})
	tests := []struct {
		name   string
		block  string
		opts   Options
		status int
		text   string // in the body and the log
	}{
		{"request timeout", "timeouts: {request: 500ms}\n", Options{}, http.StatusGatewayTimeout,
			"the request timed out (timeouts.request) before the client had sent its whole body"},
		{"body idle timeout", "", Options{BodyIdleTimeout: 500 * time.Millisecond}, http.StatusRequestTimeout,
			"the client sent no bytes of the request body for 500ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rt, _ := routeFromYAML(t, "s", "authenticateURLsMatching: '^http://127\\.0\\.0\\.1:'\n"+tc.block, bearerPlugin, fetch)
			s, logs := startProxy(t, []Route{rt}, tc.opts)
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST http://%s/up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc", sink.hostPort())
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer to a stalled upload: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.text) {
				t.Errorf("status %d, body %q; want %d and %q", resp.StatusCode, body, tc.status, tc.text)
			}
			if !strings.Contains(logs.String(), tc.text) {
				t.Errorf("log lacks %q:\n%s", tc.text, logs.String())
			}
		})
	}
}

// TestSlowAnswerToUpload: the body idle timeout applies while the body is
// read only; a target that takes longer than it to answer a finished
// upload, or streams its answer for longer, is not cut.
func TestSlowAnswerToUpload(t *testing.T) {
	slow := newTarget(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(700 * time.Millisecond)
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		time.Sleep(700 * time.Millisecond)
		_, _ = io.WriteString(w, "done\n")
	}))
	rt, _ := routeFromYAML(t, "s", "authenticateURLsMatching: '^http://127\\.0\\.0\\.1:'\n", bearerPlugin, staticFetch(map[string]string{"token": "t0ken-x"}))
	s, _ := startProxy(t, []Route{rt}, Options{BodyIdleTimeout: 300 * time.Millisecond})
	resp, err := proxyClient(s, nil).Post("http://"+slow.hostPort()+"/up", "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "first\ndone\n" {
		t.Fatalf("status %d, body %q, err %v", resp.StatusCode, body, err)
	}
}

// TestActiveCountsRequests: Active counts the requests being served, for
// the broker's reload and shutdown logs.
func TestActiveCountsRequests(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	slow := newTarget(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
	}))
	rt, _ := routeFromYAML(t, "s", "authenticateURLsMatching: '^http://127\\.0\\.0\\.1:'\n", bearerPlugin, staticFetch(map[string]string{"token": "t0ken-x"}))
	s, _ := startProxy(t, []Route{rt}, Options{})
	done := make(chan error, 1)
	go func() {
		resp, err := proxyClient(s, nil).Get("http://" + slow.hostPort() + "/wait")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-started
	if n := s.Active(); n != 1 {
		t.Errorf("Active during a request = %d, want 1", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Active() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Active after the request = %d", s.Active())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRedirectBodyRedactionKeepsHeadAndPace: the redaction of small
// redirect bodies leaves a HEAD answer's Content-Length alone, and a
// redirect whose body is slow gets its headers at once (its body then
// passes as it comes).
func TestRedirectBodyRedactionKeepsHeadAndPace(t *testing.T) {
	fetch := staticFetch(map[string]string{"key": "HeadKey-Secret-1"})
	tgt := newTarget(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailed":
			w.Header().Set("Location", "/elsewhere")
			w.Header().Set("Trailer", "X-Trailer")
			w.WriteHeader(http.StatusFound)
			_, _ = io.WriteString(w, "moved\n")
			w.Header().Set("X-Trailer", "end "+r.URL.Query().Get("apikey"))
		case "/slow":
			w.Header().Set("Location", "/elsewhere")
			w.WriteHeader(http.StatusFound)
			_, _ = io.WriteString(w, "moving ")
			w.(http.Flusher).Flush()
			time.Sleep(3 * time.Second)
			_, _ = io.WriteString(w, "on\n")
		default:
			w.Header().Set("Location", "/elsewhere")
			w.Header().Set("Content-Length", "41")
			w.WriteHeader(http.StatusFound)
			if r.Method != http.MethodHead {
				_, _ = io.WriteString(w, strings.Repeat("x", 40)+"\n")
			}
		}
	}))
	block := "authenticateURLsMatching: ['^http://127\\.0\\.0\\.1:']\nqueryParams:\n  apikey: '{{ .key }}'\n"
	rt, _ := routeFromYAML(t, "q", block, generichttp.Plugin(), fetch)
	s, _ := startProxy(t, []Route{rt}, Options{})
	c := proxyClient(s, nil)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	t.Run("HEAD", func(t *testing.T) {
		resp, err := c.Head("http://" + tgt.hostPort() + "/r")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Content-Length"); got != "41" {
			t.Errorf("Content-Length %q, want the target's 41", got)
		}
	})
	t.Run("trailers", func(t *testing.T) {
		resp, err := c.Get("http://" + tgt.hostPort() + "/trailed")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "moved\n" || resp.Trailer.Get("X-Trailer") != "end [REDACTED]" {
			t.Errorf("body %q, trailer %q; want the body and the trailer, redacted", b, resp.Trailer.Get("X-Trailer"))
		}
	})
	t.Run("slow body", func(t *testing.T) {
		start := time.Now()
		resp, err := c.Get("http://" + tgt.hostPort() + "/slow")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("headers after %s, want them before the slow body ends", d)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != "moving on\n" {
			t.Errorf("body %q, %v", b, err)
		}
	})
}
