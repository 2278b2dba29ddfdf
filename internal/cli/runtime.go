package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/config"
)

// poke sends on a 1-buffered channel without blocking: several requests that
// arrive during one reload collapse into one more reload.
func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// watchFile calls changed whenever the contents of file change. It polls
// (rather than using inotify) because Kubernetes updates a mounted ConfigMap
// by swapping a symlink, which inotify watches on the file itself miss.
func watchFile(ctx context.Context, file string, every time.Duration, changed func()) {
	digest := func() []byte {
		// Bounded, and never blocked by a fifo: a bad file is left for the
		// reload to report, once it is changed into a good one.
		data, err := config.ReadFile(file)
		if err != nil {
			return nil
		}
		sum := sha256.Sum256(data)
		return sum[:]
	}
	last := digest()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if now := digest(); now != nil && !bytes.Equal(now, last) {
				last = now
				changed()
			}
		}
	}
}

// profileServer serves pprof on a loopback address only.
type profileServer struct {
	ln  net.Listener
	srv *http.Server
}

// listenProfile checks addr and binds it.
func listenProfile(addr string) (*profileServer, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("-profile %q: want host:port on loopback, such as 127.0.0.1:6060", addr)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("-profile %q: pprof is served on loopback addresses only (127.0.0.1, ::1, localhost)", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-profile: %w", err)
	}
	return &profileServer{ln: ln}, nil
}

// serve starts serving pprof on the bound address.
func (p *profileServer) serve(log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	srv := p.srv
	go func() { _ = srv.Serve(p.ln) }()
	log.Info("pprof listening", "address", p.ln.Addr().String())
}

// close stops serving, or releases the address if serving never started.
func (p *profileServer) close() {
	if p.srv != nil {
		_ = p.srv.Close()
	}
	_ = p.ln.Close()
}
