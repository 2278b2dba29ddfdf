// Package health serves the broker's probe endpoints, none of which dials a
// target:
//
//	GET /live     200 while the process runs
//	GET /startup  200 once start-up has finished (listeners opened), 503 before
//	GET /ready    200 while every service is listening and the broker is not
//	              shutting down, 503 otherwise; ?full=1 adds one line per service
//
// Extra handlers (such as /metrics) can be mounted with Handle.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Server is the health HTTP server.
type Server struct {
	ready   atomic.Bool
	started atomic.Bool
	srv     *http.Server
	ln      net.Listener
	mux     *http.ServeMux

	mu       sync.Mutex
	services map[string]string // service -> state ("listening", "stopped", ...)
}

// Listen binds addr (for example ":5335"), so that an address already in use
// is a start-up error.
func Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health server: listen on %s: %w (choose another address with -health-addr, or turn it off with -health-addr \"\")", addr, err)
	}
	s := &Server{ln: ln, mux: http.NewServeMux(), services: map[string]string{}}
	s.mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok\n")
	})
	s.mux.HandleFunc("GET /startup", func(w http.ResponseWriter, _ *http.Request) {
		if !s.started.Load() {
			writeText(w, http.StatusServiceUnavailable, "starting\n")
			return
		}
		writeText(w, http.StatusOK, "started\n")
	})
	s.mux.HandleFunc("GET /ready", s.handleReady)
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ready := s.ready.Load()
	s.mu.Lock()
	names := make([]string, 0, len(s.services))
	for n, st := range s.services {
		names = append(names, n)
		if st != "listening" {
			ready = false
		}
	}
	sort.Strings(names)
	body := "not ready\n"
	if ready {
		body = "ready\n"
	}
	if r.URL.Query().Get("full") != "" {
		for _, n := range names {
			body += fmt.Sprintf("service %s: %s\n", n, s.services[n])
		}
	}
	s.mu.Unlock()
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	writeText(w, code, body)
}

// SetLogger sends the HTTP server's own error lines (such as accept errors)
// to l, so they follow the broker's log format. Call it before Serve.
func (s *Server) SetLogger(l *slog.Logger) {
	s.srv.ErrorLog = slog.NewLogLogger(l.Handler(), slog.LevelWarn)
}

// Handle mounts an extra handler, e.g. "GET /metrics".
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Addr returns the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// SetStarted marks start-up as finished (for /startup).
func (s *Server) SetStarted() { s.started.Store(true) }

// SetReady sets the broker-wide readiness.
func (s *Server) SetReady(v bool) { s.ready.Store(v) }

// SetService records a service's state; any state other than "listening"
// makes /ready answer 503. An empty state removes the service.
func (s *Server) SetService(name, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if state == "" {
		delete(s.services, name)
		return
	}
	s.services[name] = state
}

// Shutdown stops the server.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	// Shutdown closes only listeners Serve has taken; Serve may not have
	// started yet (start-up failed right after Listen).
	if cerr := s.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
		err = cerr
	}
	return err
}
