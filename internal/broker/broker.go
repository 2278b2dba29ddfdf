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
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/config"
	"github.com/secretless-broker/secretless-broker/internal/health"
	"github.com/secretless-broker/secretless-broker/internal/logging"
	"github.com/secretless-broker/secretless-broker/internal/plugins"
	"github.com/secretless-broker/secretless-broker/internal/providers"
	"github.com/secretless-broker/secretless-broker/internal/proxy"
	"github.com/secretless-broker/secretless-broker/internal/registry"
	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
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
}

// Broker is a prepared broker: config and plugins loaded, connectors built.
type Broker struct {
	opts     Options
	log      *slog.Logger
	cfg      *config.Config
	reg      *registry.Registry
	services []*service
	health   *health.Server
	plugins  []plugins.Plugin
}

type service struct {
	cfg       config.Service
	connector tcp.Connector
	tcp       *proxy.TCPService
}

// Registry returns the connectors the broker knows.
func (b *Broker) Registry() *registry.Registry { return b.reg }

// Plugins returns the loaded plugins.
func (b *Broker) Plugins() []plugins.Plugin { return b.plugins }

// Config returns the loaded config.
func (b *Broker) Config() *config.Config { return b.cfg }

// LoadConfig reads and validates a config file with the given providers.
func LoadConfig(file string, provs providers.Registry) (*config.Config, error) {
	if provs == nil {
		provs = providers.Default()
	}
	return config.Load(file, provs)
}

// NewRegistry registers the built-in connectors and the given plugins.
func NewRegistry(loaded []plugins.Plugin) (*registry.Registry, error) {
	reg := registry.New()
	for _, e := range Builtins() {
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
func CheckConnectors(cfg *config.Config, reg *registry.Registry, allowUnknown bool) error {
	problems := config.CheckAddresses(cfg, func(id string) bool {
		e, ok := reg.Lookup(id)
		return ok && e.Type == sdk.TypeHTTPConnector
	})
	for _, s := range cfg.Services {
		e, ok := reg.Lookup(s.Connector)
		if !ok && allowUnknown {
			continue
		}
		if !ok {
			problems = append(problems, cfg.ConnectorProblem(s, "unknown connector %q (known: %s); a plugin connector must be a .so in the -p directory", s.Connector, knownList(reg.IDs())))
			continue
		}
		if e.Type != sdk.TypeTCPConnector {
			problems = append(problems, cfg.ConnectorProblem(s, "connector %q is an HTTP connector; HTTP proxy services are not supported by this version", s.Connector))
			continue
		}
		if err := validateConfig(e, s.Config); err != nil {
			problems = append(problems, cfg.ServiceProblem(s, "config", "rejected by connector %q: %v", s.Connector, err))
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
	var v any = e.TCP
	if e.Type == sdk.TypeHTTPConnector {
		v = e.HTTP
	}
	if val, ok := v.(interface{ ValidateConfig([]byte) error }); ok {
		return val.ValidateConfig(block)
	}
	return nil
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
	b := &Broker{opts: opts, log: opts.Logger}
	cfg, err := LoadConfig(opts.ConfigFile, opts.Providers)
	if err != nil {
		return nil, err
	}
	b.cfg = cfg
	loaded, err := plugins.Load(plugins.Options{Dir: opts.PluginDir, ChecksumFile: opts.ChecksumFile,
		Reserved: BuiltinIDs(), Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	b.plugins = loaded
	if b.reg, err = NewRegistry(loaded); err != nil {
		return nil, err
	}
	if err := CheckConnectors(cfg, b.reg, false); err != nil {
		return nil, err
	}
	for _, s := range cfg.Services {
		e, _ := b.reg.Lookup(s.Connector)
		c, err := newConnector(e, s, opts.Logger)
		if err != nil {
			return nil, &config.Error{Problems: []config.Problem{cfg.ConnectorProblem(s, "%v", err)}}
		}
		b.services = append(b.services, &service{cfg: s, connector: c})
	}
	return b, nil
}

type resources struct {
	config []byte
	logger *logging.Adapter
}

func (r resources) Config() []byte { return r.config }

func (r resources) Logger() sdklogLogger { return r.logger }

func newConnector(e registry.Entry, s config.Service, log *slog.Logger) (c tcp.Connector, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("connector %q panicked in NewConnector: %v", e.ID, r)
		}
	}()
	c = e.TCP.NewConnector(resources{config: s.Config, logger: logging.ForService(log, s.Name)})
	if c == nil {
		return nil, fmt.Errorf("connector %q: NewConnector returned nil", e.ID)
	}
	return c, nil
}

// Start opens the health server and every listener. On any failure it closes
// what it opened and returns the error.
func (b *Broker) Start() (err error) {
	var opened []net.Listener
	defer func() {
		if err != nil {
			for _, l := range opened {
				_ = l.Close()
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
		go func() {
			if err := b.health.Serve(); err != nil {
				b.log.Error("health server stopped", "error", err)
			}
		}()
	}
	for _, s := range b.services {
		l, err := proxy.Listen(s.cfg.ListenOn, s.cfg.SocketMode)
		if err != nil {
			return fmt.Errorf("service %s: %w", s.cfg.Name, err)
		}
		opened = append(opened, l)
		creds := s.cfg.Credentials
		s.tcp = &proxy.TCPService{
			Name:      s.cfg.Name,
			Listener:  l,
			Connector: s.connector,
			Logger:    b.log,
			Fetch: func(ctx context.Context) (connector.CredentialValuesByID, error) {
				return b.opts.Providers.Fetch(ctx, creds)
			},
		}
	}
	return nil
}

// Addr returns the listen address of a service, for tests and messages.
func (b *Broker) Addr(service string) net.Addr {
	for _, s := range b.services {
		if s.cfg.Name == service && s.tcp != nil {
			return s.tcp.Listener.Addr()
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

// Serve serves every service until ctx is done, then shuts down: readiness
// turns false, listeners close, and open connections get ShutdownTimeout to
// finish before they are closed.
func (b *Broker) Serve(ctx context.Context) error {
	errc := make(chan error, len(b.services))
	var wg sync.WaitGroup
	for _, s := range b.services {
		b.log.Info("service listening", "service", s.cfg.Name, "connector", s.cfg.Connector, "address", s.cfg.ListenOn.String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.tcp.Serve(); err != nil {
				errc <- err
			}
		}()
	}
	if b.health != nil {
		b.health.SetReady(true)
	}
	b.log.Info("secretless-broker ready", "services", len(b.services))
	var serveErr error
	select {
	case <-ctx.Done():
		b.log.Info("shutting down", "grace", b.opts.ShutdownTimeout)
	case serveErr = <-errc:
		b.log.Error("service failed; shutting down", "error", serveErr)
	}
	if b.health != nil {
		b.health.SetReady(false)
	}
	sctx, cancel := context.WithTimeout(context.Background(), b.opts.ShutdownTimeout)
	defer cancel()
	var forced []string
	var mu sync.Mutex
	var swg sync.WaitGroup
	for _, s := range b.services {
		swg.Add(1)
		go func() {
			defer swg.Done()
			if n := s.tcp.Active(); n > 0 {
				b.log.Info("waiting for open connections", "service", s.cfg.Name, "connections", n)
			}
			if err := s.tcp.Shutdown(sctx); err != nil {
				mu.Lock()
				forced = append(forced, s.cfg.Name)
				mu.Unlock()
			}
		}()
	}
	swg.Wait()
	wg.Wait()
	if len(forced) > 0 {
		b.log.Warn("grace period over; closed remaining connections", "services", forced)
	}
	if b.health != nil {
		_ = b.health.Shutdown(context.Background())
	}
	for _, s := range b.services {
		if s.cfg.ListenOn.Network == "unix" {
			removeSocket(s.cfg.ListenOn.Address)
		}
	}
	if serveErr != nil {
		return serveErr
	}
	return nil
}

// Run is Prepare, Start and Serve.
func Run(ctx context.Context, opts Options) error {
	b, err := Prepare(opts)
	if err != nil {
		return err
	}
	if err := b.Start(); err != nil {
		return err
	}
	return b.Serve(ctx)
}

func knownList(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}
