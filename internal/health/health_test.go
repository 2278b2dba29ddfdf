package health

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestEndpoints(t *testing.T) {
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	defer s.Shutdown(context.Background())
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	type probe struct {
		path string
		code int
		body string
	}
	steps := []struct {
		name   string
		apply  func()
		probes []probe
	}{
		{"before start", func() {}, []probe{{"/live", 200, "ok"}, {"/startup", 503, "starting"}, {"/ready", 503, "not ready"}}},
		{"started and ready", func() { s.SetService("pg", "listening"); s.SetStarted(); s.SetReady(true) },
			[]probe{{"/startup", 200, "started"}, {"/ready", 200, "ready"}, {"/ready?full=1", 200, "service pg: listening"}}},
		{"one service down", func() { s.SetService("redis", "listen failed") },
			[]probe{{"/ready", 503, "not ready"}, {"/ready?full=1", 503, "service redis: listen failed"}}},
		{"service removed", func() { s.SetService("redis", "") }, []probe{{"/ready", 200, "ready"}}},
		{"shutting down", func() { s.SetReady(false) }, []probe{{"/ready", 503, "not ready"}, {"/live", 200, "ok"}, {"/startup", 200, "started"}}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.apply()
			for _, p := range st.probes {
				code, body := get(p.path)
				if code != p.code || !strings.Contains(body, p.body) {
					t.Errorf("%s = %d %q, want %d %q", p.path, code, body, p.code, p.body)
				}
			}
		})
	}
}

func TestAddressInUse(t *testing.T) {
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.ln.Close()
	if _, err := Listen(s.Addr().String()); err == nil || !strings.Contains(err.Error(), "health server: listen on") {
		t.Fatalf("err = %v", err)
	}
}
