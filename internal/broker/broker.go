// Package broker wires the pieces together: it loads the config, verifies
// and loads plugins, registers built-in and plugin connectors, builds one
// connector per service, opens the listeners and the health server, and
// drains everything on shutdown.
//
// Start-up is all-or-nothing: a bad config, a bad plugin, a connector that
// rejects its config or a listener that cannot open stops the broker before
// it serves any connection.
package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/config"
	"github.com/secretless-broker/secretless-broker/internal/health"
	"github.com/secretless-broker/secretless-broker/internal/httpproxy"
	"github.com/secretless-broker/secretless-broker/internal/logging"
	"github.com/secretless-broker/secretless-broker/internal/metrics"
	"github.com/secretless-broker/secretless-broker/internal/plugins"
	"github.com/secretless-broker/secretless-broker/internal/providers"
	"github.com/secretless-broker/secretless-broker/internal/proxy"
	"github.com/secretless-broker/secretless-broker/internal/redact"
	"github.com/secretless-broker/secretless-broker/internal/registry"
	"github.com/secretless-broker/secretless-broker/internal/typo"
	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/http"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
	sdklog "github.com/secretless-broker/secretless-broker/sdk/log"
)

// DefaultShutdownTimeout bounds how long open connections may keep running
// after a shutdown signal.
const DefaultShutdownTimeout = 30 * time.Second

// Options configure a broker.
type Options struct {
	ConfigFile      string
	PluginDir       string
	ChecksumFile    string
	HealthAddr      string // "" disables the health server
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	// Providers defaults to providers.Default().
	Providers providers.Registry
	// Extra connectors registered beside the built-ins, exactly like plugins
	// (used by tests and by programs embedding the broker).
	Extra []registry.Entry
}

// Broker is a prepared broker: config and plugins loaded, connectors built.
type Broker struct {
	opts     Options
	log      *slog.Logger
	cfg      *config.Config
	reg      *registry.Registry
	services []*service // in file order
	units    []unit     // their listeners
	health   *health.Server
	metrics  *metrics.Metrics

	pluginState string // fingerprint of the plugin dir and checksum file at start
	// slots counts each TCP service's sessions against its maxConnections,
	// by service name, across reloads (the old service's draining sessions
	// count with the new one's).
	slots    map[string]*proxy.Slots
	mu       sync.Mutex
	draining sync.WaitGroup // services replaced by a reload, still finishing sessions
	serveErr chan error
}

type service struct {
	cfg       config.Service
	connector tcp.Connector // TCP services
	// live holds the secrets the service's connections hold at the moment;
	// its connector's log lines are redacted with them.
	live *redact.Live

	httpConn http.Connector    // HTTP services
	httpCfg  *httpproxy.Config // their proxy-level settings
	builtin  bool              // the connector is compiled in (its error texts were reviewed)
}

func (s *service) isHTTP() bool { return s.httpConn != nil }

// LoadConfig reads and validates a config file with the given providers.
func LoadConfig(file string, provs providers.Registry) (*config.Config, error) {
	if provs == nil {
		provs = providers.Default()
	}
	return config.Load(file, provs)
}

// NewRegistry registers the built-in connectors, extra and the given plugins.
func NewRegistry(loaded []plugins.Plugin, extra ...registry.Entry) (*registry.Registry, error) {
	reg := registry.New()
	for _, e := range append(Builtins(), extra...) {
		if err := reg.Add(e); err != nil {
			return nil, err
		}
	}
	for _, p := range loaded {
		if err := reg.Add(registry.Entry{ID: p.ID, Type: p.Type, Description: p.Description,
			Source: "plugin " + p.File, TCP: p.TCP, HTTP: p.HTTP}); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// BuiltinIDs lists the ids of the built-in connectors.
func BuiltinIDs() []string {
	var ids []string
	for _, e := range Builtins() {
		ids = append(ids, e.ID)
	}
	return ids
}

// CheckConnectors reports every service whose connector is unknown or
// cannot serve it, every config block its connector rejects, and listen
// addresses that collide. With allowUnknown, connectors that are not
// registered are skipped (validate without -p cannot know plugin ids).
// Credentials are checked with the values provs can tell at load time
// (providers.Peeker: literal, env and file); provs nil means
// providers.Default().
func CheckConnectors(cfg *config.Config, reg *registry.Registry, provs providers.Registry, allowUnknown bool) error {
	if provs == nil {
		provs = providers.Default()
	}
	problems := config.CheckAddresses(cfg, func(id string) bool {
		e, ok := reg.Lookup(id)
		return ok && e.Type == sdk.TypeHTTPConnector
	})
	for _, s := range cfg.Services {
		e, ok := reg.Lookup(s.Connector)
		if !ok && allowUnknown {
			// It may be a plugin's id, even one close to a known id
			// ("pgx"); validate without -p notes it with SuggestConnector.
			continue
		}
		if !ok {
			if meant := SuggestConnector(reg, s.Connector); meant != "" {
				problems = append(problems, cfg.ConnectorProblem(s, "unknown connector %q; did you mean %q?", s.Connector, meant))
				continue
			}
			problems = append(problems, cfg.ConnectorProblem(s, "unknown connector %q (known: %s); a plugin connector must be a .so in the -p directory", s.Connector, knownList(reg.IDs())))
			continue
		}
		block := s.Config
		if e.Type == sdk.TypeHTTPConnector {
			for _, l := range []struct {
				key string
				set bool
			}{{"maxConnections", s.MaxConnections != 0}, {"connectTimeout", s.ConnectTimeout != 0}, {"idleTimeout", s.IdleTimeout != 0}} {
				if key, set := l.key, l.set; set {
					problems = append(problems, cfg.ServiceProblem(s, key,
						"applies to TCP services only; HTTP services take config.timeouts (dial, request, idle, ...)"))
				}
			}
			_, rest, err := httpproxy.ParseConfig(s.Config)
			if err != nil {
				problems = append(problems, httpConfigProblems(cfg, s, err)...)
				if verr := validateConfig(e, rest); verr != nil {
					problems = append(problems, connectorConfigProblems(cfg, s, verr)...)
				}
				continue
			}
			block = rest
		}
		if err := validateConfig(e, block); err != nil {
			problems = append(problems, connectorConfigProblems(cfg, s, err)...)
			continue // credential checks read the config block too
		}
		if err := validateCredentials(e, s, block, provs); err != nil {
			problems = append(problems, credentialProblems(cfg, s, err)...)
		}
	}
	if len(problems) > 0 {
		return &config.Error{Problems: problems}
	}
	return nil
}

func validateConfig(e registry.Entry, block []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("connector panicked while validating its config: %v", r)
		}
	}()
	if val, ok := e.Plugin().(interface{ ValidateConfig([]byte) error }); ok {
		return val.ValidateConfig(block)
	}
	return nil
}

// validateCredentials lets a connector that implements
// connector.CredentialsValidator check the credentials a service declares,
// with the values provs can tell at load time.
func validateCredentials(e registry.Entry, s config.Service, block []byte, provs providers.Registry) error {
	cv, ok := e.Plugin().(connector.CredentialsValidator)
	if !ok {
		return nil
	}
	names := make([]string, 0, len(s.Credentials))
	literal := connector.CredentialValuesByID{}
	for _, c := range s.Credentials {
		names = append(names, c.Name)
		if v, ok := provs.LoadValue(c); ok {
			literal[c.Name] = v
		}
	}
	defer literal.Zero()
	check := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("connector panicked while validating credentials: %v", r)
			}
		}()
		return cv.ValidateCredentials(block, names, literal)
	}
	// The panic's text is redacted too: it may quote a value.
	return proxy.Redact(check(), literal)
}

// Prepare loads config and plugins and builds every connector. It opens no
// listener.
func Prepare(opts Options) (*Broker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Providers == nil {
		opts.Providers = providers.Default()
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	b := &Broker{opts: opts, log: opts.Logger, metrics: metrics.New(), serveErr: make(chan error, 16)}
	cfg, cfgErr := LoadConfig(opts.ConfigFile, opts.Providers)
	if cfgErr != nil && !config.CanCheckLater(cfgErr) {
		return nil, cfgErr
	}
	b.cfg = cfg
	b.pluginState = plugins.Fingerprint(opts.PluginDir, opts.ChecksumFile)
	reserved := BuiltinIDs()
	for _, e := range opts.Extra {
		reserved = append(reserved, e.ID)
	}
	loaded, err := plugins.Load(plugins.Options{Dir: opts.PluginDir, ChecksumFile: opts.ChecksumFile,
		Reserved: reserved, Logger: opts.Logger})
	if err != nil {
		b.metrics.PluginLoads.WithLabelValues("failed").Inc()
		if cfgErr != nil {
			return nil, errors.Join(cfgErr, err)
		}
		return nil, err
	}
	if cfgErr != nil {
		// The file has problems: report those of the connectors of its
		// other services in the same run.
		if reg, rerr := NewRegistry(loaded, opts.Extra...); rerr == nil {
			cfgErr = config.WithLaterProblems(cfgErr, func(c *config.Config) error {
				return CheckConnectors(c, reg, opts.Providers, false)
			})
		}
		return nil, noPluginDirHint(cfgErr, opts.PluginDir, len(loaded))
	}
	b.metrics.PluginLoads.WithLabelValues("ok").Add(float64(len(loaded)))
	if b.reg, err = NewRegistry(loaded, opts.Extra...); err != nil {
		return nil, err
	}
	if err := CheckConnectors(cfg, b.reg, b.opts.Providers, false); err != nil {
		return nil, noPluginDirHint(err, opts.PluginDir, len(loaded))
	}
	if err := b.checkOwnAddresses(cfg); err != nil {
		return nil, err
	}
	if b.services, err = b.buildServices(cfg, nil); err != nil {
		return nil, err
	}
	return b, nil
}

// buildServices builds a connector for every service of cfg, reusing the
// running service when its settings did not change.
func (b *Broker) buildServices(cfg *config.Config, running map[string]*service) ([]*service, error) {
	var out []*service
	for _, s := range cfg.Services {
		if old, ok := running[s.Name]; ok && old.cfg.Equal(s) {
			out = append(out, old)
			continue
		}
		e, _ := b.reg.Lookup(s.Connector)
		live := &redact.Live{}
		if e.Type == sdk.TypeHTTPConnector {
			svc, err := newHTTPService(e, s, b.log, live)
			if err != nil {
				return nil, &config.Error{Problems: []config.Problem{cfg.ConnectorProblem(s, "%v", err)}}
			}
			out = append(out, svc)
			continue
		}
		c, err := newConnector(e, s, b.log, live)
		if err != nil {
			return nil, &config.Error{Problems: []config.Problem{cfg.ConnectorProblem(s, "%v", err)}}
		}
		out = append(out, &service{cfg: s, connector: c, live: live})
	}
	return out, nil
}

type resources struct {
	config []byte
	logger *logging.Adapter
}

func (r resources) Config() []byte { return r.config }

func (r resources) Logger() sdklog.Logger { return r.logger }

var _ connector.Resources = resources{}

func newConnector(e registry.Entry, s config.Service, log *slog.Logger, live *redact.Live) (c tcp.Connector, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("connector %q panicked in NewConnector: %v", e.ID, r)
		}
	}()
	c = e.TCP.NewConnector(resources{config: s.Config, logger: logging.ForService(log, s.Name, live)})
	if c == nil {
		return nil, fmt.Errorf("connector %q: NewConnector returned nil", e.ID)
	}
	return c, nil
}

// Start opens the health server and every listener. On any failure it closes
// what it opened and returns the error.
func (b *Broker) Start() (err error) {
	var opened []unit
	defer func() {
		if err != nil {
			for _, u := range opened {
				u.stopAccepting()
			}
			if b.health != nil {
				_ = b.health.Shutdown(context.Background())
				b.health = nil
			}
		}
	}()
	if b.opts.HealthAddr != "" {
		if b.health, err = health.Listen(b.opts.HealthAddr); err != nil {
			return err
		}
		b.health.Handle("GET /metrics", b.metrics.Handler())
		b.health.SetLogger(b.log.With("server", "health"))
		// The goroutine gets its own reference: a failure below clears
		// b.health while it may not have started yet.
		hs := b.health
		go func() {
			if err := hs.Serve(); err != nil {
				b.log.Error("health server stopped", "error", err)
			}
		}()
	}
	units, err := b.makeUnits(b.services, nil)
	if err != nil {
		return err
	}
	for _, u := range units {
		if err := u.listen(b); err != nil {
			return err
		}
		opened = append(opened, u)
	}
	b.units = units
	return nil
}

// fetcher returns the per-connection (or per-request) credential fetch of a
// service, observed by the metrics.
func (b *Broker) fetcher(creds []config.Credential) proxy.FetchFunc {
	provs, m := b.opts.Providers, b.metrics
	return func(ctx context.Context) (connector.CredentialValuesByID, error) {
		return provs.FetchObserved(ctx, creds, func(provider string, d time.Duration, err error) {
			m.CredentialSeconds.WithLabelValues(provider).Observe(d.Seconds())
			if err != nil {
				m.CredentialFailures.WithLabelValues(provider).Inc()
			}
		})
	}
}

// Addr returns the listen address of a service, for tests and messages.
func (b *Broker) Addr(service string) net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, u := range b.units {
		for _, s := range u.members() {
			if s.cfg.Name == service {
				return u.addr()
			}
		}
	}
	return nil
}

// HealthAddr returns the health server's address, or nil when disabled.
func (b *Broker) HealthAddr() net.Addr {
	if b.health == nil {
		return nil
	}
	return b.health.Addr()
}

// Metrics returns the broker's metrics.
func (b *Broker) Metrics() *metrics.Metrics { return b.metrics }

func (b *Broker) setHealth(u unit, state string) {
	if b.health == nil {
		return
	}
	for _, s := range u.members() {
		b.health.SetService(s.cfg.Name, state)
	}
}

// Serve serves every service until ctx is done, reloading the config each
// time reload delivers (reload may be nil). Then it shuts down: readiness
// turns false, listeners close, and open connections get ShutdownTimeout to
// finish before they are closed.
func (b *Broker) Serve(ctx context.Context, reload <-chan struct{}) error {
	b.mu.Lock()
	for _, u := range b.units {
		b.serveUnit(u)
	}
	b.mu.Unlock()
	if b.health != nil {
		b.health.SetStarted()
		b.health.SetReady(true)
	}
	b.log.Info("secretless-broker ready", "services", len(b.services))
	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			b.log.Info("shutting down", "grace", b.opts.ShutdownTimeout)
			break loop
		case <-reload:
			_ = b.Reload()
		case serveErr = <-b.serveErr:
			b.log.Error("service failed; shutting down", "error", serveErr)
			break loop
		}
	}
	if b.health != nil {
		b.health.SetReady(false)
	}
	sctx, cancel := context.WithTimeout(context.Background(), b.opts.ShutdownTimeout)
	defer cancel()
	b.mu.Lock()
	running := b.units
	b.mu.Unlock()
	var forced []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, u := range running {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n := u.active(); n > 0 {
				b.log.Info("waiting for open connections", "services", u.names(), "connections", n)
			}
			if err := u.shutdown(sctx); err != nil {
				mu.Lock()
				forced = append(forced, u.names()...)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	b.draining.Wait()
	if len(forced) > 0 {
		b.log.Warn("grace period over; closed remaining connections", "services", forced)
	}
	if b.health != nil {
		_ = b.health.Shutdown(context.Background())
	}
	b.log.Info("stopped")
	return serveErr
}

func (b *Broker) serveUnit(u unit) {
	b.log.Info("service listening", "service", strings.Join(u.names(), ","), "address", u.listenOn().String())
	b.setHealth(u, "listening")
	u.serve(b)
}

// Reload re-reads the config file. The new config is validated completely
// first; if it is bad, the error is logged and returned and nothing changes.
// Services whose settings did not change keep their listener and sessions.
// Listeners on new addresses open before anything stops, and one that
// cannot open refuses the whole reload. Changed and removed services then
// stop accepting; their open sessions continue until they end (bounded by
// ShutdownTimeout). HTTP services that
// share an address are one listener: a change to any of them restarts that
// listener, while its in-flight requests finish. Plugins cannot be reloaded:
// a changed plugin directory or checksum file is logged as needing a restart.
func (b *Broker) Reload() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	log := b.log.With("config", b.opts.ConfigFile)
	if now := plugins.Fingerprint(b.opts.PluginDir, b.opts.ChecksumFile); now != b.pluginState {
		log.Warn("plugin directory or checksum file changed since start; plugins cannot be reloaded in a running process, restart the broker to load them (still running the plugins loaded at start)")
	}
	cfg, err := LoadConfig(b.opts.ConfigFile, b.opts.Providers)
	if err == nil {
		err = CheckConnectors(cfg, b.reg, b.opts.Providers, false)
	} else {
		err = config.WithLaterProblems(err, func(c *config.Config) error {
			return CheckConnectors(c, b.reg, b.opts.Providers, false)
		})
	}
	if err == nil {
		err = b.checkOwnAddresses(cfg)
	}
	var next []*service
	var units []unit
	running := map[string]*service{}
	for _, s := range b.services {
		running[s.cfg.Name] = s
	}
	if err == nil {
		next, err = b.buildServices(cfg, running)
	}
	if err == nil {
		units, err = b.makeUnits(next, b.units)
	}
	if err != nil {
		b.metrics.Reloads.WithLabelValues("failed").Inc()
		log.Error("reload failed; keeping the running config", "error", err)
		return err
	}
	keep := map[unit]bool{}
	for _, u := range units {
		keep[u] = true
	}
	var stopping []unit
	for _, old := range b.units {
		if !keep[old] {
			stopping = append(stopping, old)
		}
	}
	heldByStopping := func(u unit) bool {
		for _, old := range stopping {
			if config.Conflicts(old.listenOn(), u.listenOn()) {
				return true
			}
		}
		return false
	}
	// New listeners on addresses that no stopping service holds open
	// before anything stops: if one cannot (the port is taken), the reload
	// is refused and the running config keeps serving.
	opened := map[unit]bool{}
	for _, u := range units {
		if !u.fresh() || heldByStopping(u) {
			continue
		}
		if err := u.listen(b); err != nil {
			for o := range opened {
				o.stopAccepting()
			}
			closeNewConnectors(next, running, b.log)
			b.metrics.Reloads.WithLabelValues("failed").Inc()
			log.Error("reload failed; keeping the running config", "error", err)
			return fmt.Errorf("reload: %w", err)
		}
		opened[u] = true
	}
	// A changed TCP service on the very same address takes over its old
	// listener, now that the reload can no longer be refused: the clients
	// queued in it are served, not reset.
	for _, u := range units {
		nu, ok := u.(*tcpUnit)
		if !ok || !u.fresh() {
			continue
		}
		for _, old := range stopping {
			ou, ok := old.(*tcpUnit)
			if !ok || ou.listenOn() != nu.listenOn() || ou.svc.cfg.SocketMode != nu.svc.cfg.SocketMode {
				continue
			}
			if l, ok := ou.handOff(); ok {
				nu.inherited = l
				if err := nu.listen(b); err == nil { // it cannot fail: l is open
					opened[u] = true
				}
			}
			break
		}
	}
	// Then stop changed and removed listeners, so that a changed service
	// can bind the same address again.
	for _, old := range stopping {
		log.Info("service stopped accepting; open sessions continue", "service", strings.Join(old.names(), ","), "sessions", old.active())
		old.stopAccepting()
		b.setHealth(old, "")
		b.draining.Add(1)
		go func() {
			defer b.draining.Done()
			ctx, cancel := context.WithTimeout(context.Background(), b.opts.ShutdownTimeout)
			defer cancel()
			_ = old.shutdown(ctx)
		}()
	}
	var failed []string
	var started []unit
	revived := map[unit]bool{}
	for _, u := range units {
		if opened[u] {
			b.serveUnit(u)
			started = append(started, u)
			continue
		}
		if !u.fresh() {
			started = append(started, u)
			continue
		}
		// Only an address the old config held is left: another process can
		// take it in the moment between (or holds a part of a wider new
		// address). The TCP services stopped for it then serve their old
		// config on their old address again.
		if err := u.listen(b); err != nil {
			failed = append(failed, u.names()...)
			if back := b.revive(u, stopping, revived); len(back) > 0 {
				log.Error("reload: service could not move to its new address; it serves its old config on its old address until the next reload",
					"service", strings.Join(u.names(), ","), "address", u.listenOn().String(), "error", err)
				started = append(started, back...)
				continue
			}
			log.Error("reload: service could not start", "service", strings.Join(u.names(), ","), "error", err)
			b.setHealth(u, "listen failed")
			continue
		}
		b.serveUnit(u)
		started = append(started, u)
	}
	b.units = started
	b.services = next
	b.cfg = cfg
	if len(failed) > 0 {
		b.metrics.Reloads.WithLabelValues("partial").Inc()
		return fmt.Errorf("reload: services could not start: %s", strings.Join(failed, ", "))
	}
	b.metrics.Reloads.WithLabelValues("ok").Inc()
	log.Info("config reloaded", "services", len(next))
	return nil
}

// revive serves again, with a connector of its own, the stopped old
// version of u's service when its address stood in u's way, on that old
// address; done records those revived already. A removed or renamed
// service is not brought back.
func (b *Broker) revive(u unit, stopping []unit, done map[unit]bool) []unit {
	var out []unit
	for _, old := range stopping {
		ou, ok := old.(*tcpUnit)
		if !ok || done[old] || !config.Conflicts(old.listenOn(), u.listenOn()) || !slices.Contains(u.names(), ou.svc.cfg.Name) {
			continue // only the service that could not move comes back
		}
		cfg := ou.svc.cfg
		e, ok := b.reg.Lookup(cfg.Connector)
		if !ok {
			continue
		}
		live := &redact.Live{}
		c, err := newConnector(e, cfg, b.log, live)
		if err != nil {
			continue
		}
		nu := &tcpUnit{svc: &service{cfg: cfg, connector: c, live: live}}
		if err := nu.listen(b); err != nil {
			if cl, ok := c.(io.Closer); ok {
				_ = cl.Close()
			}
			continue
		}
		done[old] = true
		b.serveUnit(nu)
		out = append(out, nu)
	}
	return out
}

// closeNewConnectors closes the connectors a refused reload built for
// services it would have started (those in next that are not running).
func closeNewConnectors(next []*service, running map[string]*service, log *slog.Logger) {
	for _, s := range next {
		if running[s.cfg.Name] == s {
			continue
		}
		if c, ok := s.connector.(io.Closer); ok {
			if err := c.Close(); err != nil {
				log.Warn("closing the connector failed", "service", s.cfg.Name, "error", err)
			}
		}
	}
}

// checkOwnAddresses refuses services that would listen where the broker's
// health server does.
func (b *Broker) checkOwnAddresses(cfg *config.Config) error {
	return CheckOwnAddresses(cfg, b.opts.HealthAddr)
}

// CheckOwnAddresses refuses services that would listen on healthAddr, the
// health server's address ("" when there is none).
func CheckOwnAddresses(cfg *config.Config, healthAddr string) error {
	if healthAddr == "" {
		return nil
	}
	if p := config.CheckReserved(cfg, healthAddr, "the health server's (-health-addr "+healthAddr+")"); len(p) > 0 {
		return &config.Error{Problems: p}
	}
	return nil
}

// slotsFor is the session count of a TCP service, kept across reloads.
func (b *Broker) slotsFor(name string) *proxy.Slots {
	if b.slots == nil {
		b.slots = map[string]*proxy.Slots{}
	}
	sl, ok := b.slots[name]
	if !ok {
		sl = proxy.NewSlots()
		b.slots[name] = sl
	}
	return sl
}

// Run is Prepare, Start and Serve.
func Run(ctx context.Context, opts Options, reload <-chan struct{}) error {
	b, err := Prepare(opts)
	if err != nil {
		return err
	}
	if err := b.Start(); err != nil {
		return err
	}
	return b.Serve(ctx, reload)
}

// Warnings lists, as FILE:LINE: KEY: message, what the broker logs as a
// warning when it loads cfg: HTTP services' URL patterns that probably
// match more than meant.
func Warnings(cfg *config.Config, reg *registry.Registry) []string {
	var out []string
	for _, s := range cfg.Services {
		e, ok := reg.Lookup(s.Connector)
		if !ok || e.Type != sdk.TypeHTTPConnector {
			continue
		}
		pcfg, _, err := httpproxy.ParseConfig(s.Config)
		if err != nil {
			continue
		}
		for _, w := range pcfg.Warnings {
			out = append(out, cfg.ConfigKeyProblem(s, "authenticateURLsMatching", "URL pattern may match more than meant; credentials go to every URL it matches: "+w).Error())
		}
	}
	return out
}

// SuggestConnector is the registered connector id that an unknown id is
// probably a typo or another name of, or "".
func SuggestConnector(reg *registry.Registry, id string) string {
	return typo.Closest(id, reg.IDs(), connectorAliases)
}

// connectorAliases are names people write for the built-in connectors.
var connectorAliases = map[string]string{
	"postgres": "pg", "postgresql": "pg", "pgsql": "pg", "psql": "pg",
	"basic": "basic_auth", "http": "generic_http", "generic": "generic_http", "sigv4": "aws", "awssigv4": "aws",
}

func knownList(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

// configKeyRE finds "config.KEY.PATH: message" in a connector's error text.
var configKeyRE = regexp.MustCompile(`(?:^|: )(?:config\.)?([A-Za-z0-9_\-]+(?:\[\d+\])?(?:\.[A-Za-z0-9_\-]+(?:\[\d+\])?)*): (.*)$`)

// connectorConfigProblems reports a connector's verdict on its config block,
// one problem per line of the error, pointing at the key it names (with that
// key's line in the file) when the message says "config.KEY: ...".
func connectorConfigProblems(cfg *config.Config, s config.Service, err error) []config.Problem {
	var out []config.Problem
	for _, line := range strings.Split(err.Error(), "\n") {
		if m := configKeyRE.FindStringSubmatch(line); m != nil && cfg.HasConfigKey(s, m[1]) {
			msg := lineNoteRE.ReplaceAllString(m[2], "")
			out = append(out, cfg.ConfigKeyProblem(s, m[1], fmt.Sprintf("rejected by connector %q: %s", s.Connector, msg)))
			continue
		}
		out = append(out, cfg.ConfigKeyProblem(s, "", fmt.Sprintf("rejected by connector %q: %s", s.Connector, line)))
	}
	return out
}

// credentialKeyRE finds "credential NAME: message" (or "credentials.NAME:")
// in a connector's verdict on the credentials.
var credentialKeyRE = regexp.MustCompile(`(?:^|: )credentials?[ .]"?([A-Za-z0-9_\-]+)"?: (.*)$`)

// credentialProblems reports a connector's verdict on a service's
// credentials, one problem per line of the error, pointing at the
// credential it names (with that credential's line) when the service has
// it, else at the service's credentials.
func credentialProblems(cfg *config.Config, s config.Service, err error) []config.Problem {
	var out []config.Problem
	for _, line := range strings.Split(err.Error(), "\n") {
		if m := credentialKeyRE.FindStringSubmatch(line); m != nil && s.HasCredential(m[1]) {
			out = append(out, cfg.CredentialProblem(s, m[1], fmt.Sprintf("rejected by connector %q: %s", s.Connector, m[2])))
			continue
		}
		// A config key that refers to credentials (a template, say).
		if m := configKeyRE.FindStringSubmatch(line); m != nil && strings.HasPrefix(line, "config.") && cfg.HasConfigKey(s, m[1]) {
			out = append(out, cfg.ConfigKeyProblem(s, m[1], fmt.Sprintf("rejected by connector %q: %s", s.Connector, m[2])))
			continue
		}
		out = append(out, cfg.ServiceProblem(s, "credentials", "rejected by connector %q: %s", s.Connector, line))
	}
	return out
}

// lineNoteRE matches a "(line N)" note that counts lines inside the config
// block rather than the file; the problem's own line replaces it.
var lineNoteRE = regexp.MustCompile(` \(line \d+\)`)

// noPluginDirHint adds to each unknown-connector problem in err that the
// plugin directory does not exist, when it does not and nothing was
// loaded: the connector may be a plugin in a mistyped directory.
func noPluginDirHint(err error, dir string, loaded int) error {
	var ce *config.Error
	if dir == "" || loaded > 0 || !errors.As(err, &ce) {
		return err
	}
	if _, serr := os.Stat(dir); !errors.Is(serr, fs.ErrNotExist) {
		return err
	}
	for i, p := range ce.Problems {
		if strings.HasSuffix(p.Path, ".connector") && strings.HasPrefix(p.Msg, "unknown connector") {
			ce.Problems[i].Msg += fmt.Sprintf(" (the plugin directory %s does not exist, so no plugin was loaded)", dir)
		}
	}
	return err
}
