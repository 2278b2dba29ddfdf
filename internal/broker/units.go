package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/secretless-broker/secretless-broker/internal/config"
	"github.com/secretless-broker/secretless-broker/internal/httpproxy"
	"github.com/secretless-broker/secretless-broker/internal/logging"
	"github.com/secretless-broker/secretless-broker/internal/proxy"
	"github.com/secretless-broker/secretless-broker/internal/redact"
	"github.com/secretless-broker/secretless-broker/internal/registry"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// unit is one listener: a TCP service, or the HTTP services that share one
// listen address (one forward proxy routing by URL).
type unit interface {
	members() []*service
	names() []string
	listenOn() config.Address
	addr() net.Addr
	// fresh reports whether the unit has not listened yet.
	fresh() bool
	// listen opens the listener; serve starts accepting.
	listen(b *Broker) error
	serve(b *Broker)
	// stopAccepting closes the listener; open sessions continue.
	stopAccepting()
	// shutdown stops accepting and drains until ctx is done (ctx.Err() if
	// sessions had to be closed), then waits for the serve goroutine.
	shutdown(ctx context.Context) error
	active() int
}

// makeUnits groups services into listeners, reusing a running unit when its
// services are exactly the same (unchanged) ones.
func (b *Broker) makeUnits(svcs []*service, old []unit) ([]unit, error) {
	var out []unit
	groups := map[string]*httpGroup{}
	for _, s := range svcs {
		if !s.isHTTP() {
			out = append(out, &tcpUnit{svc: s})
			continue
		}
		g, ok := groups[s.cfg.ListenOn.Address]
		if !ok {
			g = &httpGroup{at: s.cfg.ListenOn, mode: s.cfg.SocketMode}
			groups[s.cfg.ListenOn.Address] = g
			out = append(out, g)
		}
		g.svcs = append(g.svcs, s)
	}
	for i, u := range out {
		if g, ok := u.(*httpGroup); ok {
			cfgs := make([]*httpproxy.Config, len(g.svcs))
			for j, s := range g.svcs {
				cfgs[j] = s.httpCfg
			}
			opts, err := httpproxy.ListenerOptions(cfgs...)
			if err != nil {
				return nil, fmt.Errorf("HTTP services on %s (%s): %w", g.at, strings.Join(g.names(), ", "), err)
			}
			g.opts = opts
		}
		for _, o := range old {
			if sameMembers(o.members(), u.members()) {
				out[i] = o
				break
			}
		}
	}
	return out, nil
}

func sameMembers(a, b []*service) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// tcpUnit is one TCP service.
type tcpUnit struct {
	svc  *service
	ts   *proxy.TCPService
	done chan struct{}
	// inherited is the listener of the service this one replaces on the
	// same address (a reload), taken over by listen.
	inherited net.Listener
}

// handOff stops the unit accepting and gives its listener, still open, to
// the unit replacing it; false when it cannot (it is not serving).
func (u *tcpUnit) handOff() (net.Listener, bool) {
	if u.ts == nil {
		return nil, false
	}
	l, ok := u.ts.HandOff()
	if !ok {
		return nil, false
	}
	<-u.done // Serve has returned: nothing accepts from l now
	proxy.ClearDeadline(l)
	return l, true
}

func (u *tcpUnit) members() []*service      { return []*service{u.svc} }
func (u *tcpUnit) names() []string          { return []string{u.svc.cfg.Name} }
func (u *tcpUnit) listenOn() config.Address { return u.svc.cfg.ListenOn }
func (u *tcpUnit) fresh() bool              { return u.ts == nil }
func (u *tcpUnit) active() int              { return u.ts.Active() }
func (u *tcpUnit) stopAccepting()           { u.ts.StopAccepting() }

func (u *tcpUnit) addr() net.Addr {
	if u.ts == nil {
		return nil
	}
	return u.ts.Listener.Addr()
}

func (u *tcpUnit) listen(b *Broker) error {
	c := u.svc.cfg
	l := u.inherited
	if l == nil {
		var err error
		if l, err = proxy.Listen(c.ListenOn, c.SocketMode); err != nil {
			return fmt.Errorf("service %s: %w", c.Name, err)
		}
	}
	u.ts = &proxy.TCPService{
		Name:             c.Name,
		Listener:         l,
		Connector:        u.svc.connector,
		Logger:           b.log,
		Metrics:          b.metrics,
		MaxConnections:   c.MaxConnections,
		Slots:            b.slotsFor(c.Name),
		HandshakeTimeout: c.ConnectTimeout,
		IdleTimeout:      c.IdleTimeout,
		Fetch:            b.fetcher(c.Credentials),
		Live:             u.svc.live,
	}
	u.done = make(chan struct{})
	return nil
}

func (u *tcpUnit) serve(b *Broker) {
	if ic, ok := u.svc.connector.(tcp.IdleCounter); ok && b.metrics != nil {
		b.metrics.IdleTargets.Add(u, u.svc.cfg.Name, ic.IdleConnections)
	}
	go func() {
		defer close(u.done)
		if err := u.ts.Serve(); err != nil {
			b.setHealth(u, "accept failed")
			b.serveErr <- err
		}
	}()
}

func (u *tcpUnit) shutdown(ctx context.Context) error {
	err := u.ts.Shutdown(ctx)
	<-u.done
	// A connector may hold resources beyond its connections (the pg
	// connector's idle server sessions): it is closed with its service.
	if c, ok := u.svc.connector.(io.Closer); ok {
		if cerr := c.Close(); cerr != nil {
			u.ts.Logger.Warn("closing the connector failed", "service", u.svc.cfg.Name, "error", cerr)
		}
	}
	if u.ts.Metrics != nil {
		u.ts.Metrics.IdleTargets.Remove(u)
	}
	return err
}

// httpGroup is the HTTP services on one listen address.
type httpGroup struct {
	at       config.Address
	mode     os.FileMode
	svcs     []*service
	opts     httpproxy.Options
	ln       net.Listener
	srv      *httpproxy.Server
	done     chan struct{}
	stopping atomic.Bool
}

func (g *httpGroup) members() []*service      { return g.svcs }
func (g *httpGroup) listenOn() config.Address { return g.at }
func (g *httpGroup) fresh() bool              { return g.srv == nil }
func (g *httpGroup) active() int {
	if g.srv == nil {
		return 0
	}
	return g.srv.Active()
}

func (g *httpGroup) names() []string {
	out := make([]string, len(g.svcs))
	for i, s := range g.svcs {
		out[i] = s.cfg.Name
	}
	return out
}

func (g *httpGroup) addr() net.Addr {
	if g.ln == nil {
		return nil
	}
	return g.ln.Addr()
}

func (g *httpGroup) listen(b *Broker) error {
	l, err := proxy.Listen(g.at, g.mode)
	if err != nil {
		return fmt.Errorf("service %s: %w", strings.Join(g.names(), ", "), err)
	}
	routes := make([]httpproxy.Route, len(g.svcs))
	for i, s := range g.svcs {
		routes[i] = s.httpCfg.Route(s.cfg.Name, s.httpConn, b.fetcher(s.cfg.Credentials))
		routes[i].PublicErrors = s.builtin
		routes[i].Live = s.live
	}
	g.ln = l
	opts := g.opts
	m := b.metrics
	opts.Observe = func(service string, code int) {
		m.HTTPRequests.WithLabelValues(service, strconv.Itoa(code)).Inc()
	}
	g.srv = httpproxy.New(l, routes, b.log, opts)
	g.done = make(chan struct{})
	return nil
}

func (g *httpGroup) serve(b *Broker) {
	go func() {
		defer close(g.done)
		if err := g.srv.Serve(); err != nil && !g.stopping.Load() && !errors.Is(err, net.ErrClosed) {
			b.setHealth(g, "accept failed")
			b.serveErr <- fmt.Errorf("HTTP proxy on %s: %w", g.at, err)
		}
	}()
}

func (g *httpGroup) stopAccepting() {
	g.stopping.Store(true)
	_ = g.ln.Close()
}

func (g *httpGroup) shutdown(ctx context.Context) error {
	g.stopping.Store(true)
	err := g.srv.Shutdown(ctx)
	<-g.done
	return err
}

// newHTTPService builds an HTTP service: the proxy-level keys of its config
// block go to the proxy, the rest to the connector.
func newHTTPService(e registry.Entry, s config.Service, log *slog.Logger, live *redact.Live) (svc *service, err error) {
	pcfg, rest, err := httpproxy.ParseConfig(s.Config)
	if err != nil {
		return nil, err
	}
	for _, w := range pcfg.Warnings {
		log.Warn("URL pattern may match more than meant; credentials go to every URL it matches", "service", s.Name, "problem", w)
	}
	defer func() {
		if r := recover(); r != nil {
			svc, err = nil, fmt.Errorf("connector %q panicked in NewConnector: %v", e.ID, r)
		}
	}()
	c := e.HTTP.NewConnector(resources{config: rest, logger: logging.ForService(log, s.Name, live)})
	if c == nil {
		return nil, fmt.Errorf("connector %q: NewConnector returned nil", e.ID)
	}
	return &service{cfg: s, httpConn: c, httpCfg: pcfg, builtin: e.Source == builtinSource, live: live}, nil
}

// httpConfigProblems turns httpproxy.ParseConfig errors into problems whose
// key path points into the service's config block.
func httpConfigProblems(cfg *config.Config, s config.Service, err error) []config.Problem {
	var out []config.Problem
	for _, e := range flatten(err) {
		var ke *httpproxy.KeyError
		if errors.As(e, &ke) {
			out = append(out, cfg.ConfigKeyProblem(s, ke.Key, ke.Msg))
			continue
		}
		out = append(out, cfg.ServiceProblem(s, "config", "%v", e))
	}
	return out
}

// flatten is err's joined errors, at any depth, in order.
func flatten(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}
