package pg

import (
	"fmt"
	"io"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
	"github.com/secretless-broker/secretless-broker/sdk/log"
)

// ID is the connector id that services name in their "connector" key.
const ID = "pg"

// Description is a one-line description, as a plugin's PluginInfo gives.
const Description = "PostgreSQL: any client, no password; the broker logs in with the service's credentials"

// Plugin returns the PostgreSQL connector plugin. It also implements
// tcp.Validator.
func Plugin() tcp.Plugin { return plugin{} }

type plugin struct{}

// ValidateConfig checks a service's config block; errors name the key.
func (plugin) ValidateConfig(cfg []byte) error {
	_, err := parseConfig(cfg)
	return err
}

// NewConnector builds the connector of one service. A config block that
// fails validation (which the broker reports at start-up through
// ValidateConfig) makes every connection fail with a FATAL error.
func (plugin) NewConnector(r connector.Resources) tcp.Connector {
	return newConnector(r.Config(), r.Logger())
}

func newConnector(rawCfg []byte, logger log.Logger) *pgConnector {
	if logger == nil {
		logger = nopLogger{}
	}
	c := &pgConnector{logger: logger, cancels: liveSessions}
	cfg, err := parseConfig(rawCfg)
	if err != nil {
		logger.Errorf("pg: %v", err)
		c.cfgErr = err
		cfg, _ = parseConfig(nil)
	}
	c.cfg = cfg
	c.scram = newSCRAMCache(cfg.scramCacheSize)
	if cfg.poolMaxIdle > 0 {
		c.pool = newServerPool(cfg.poolMaxIdle, cfg.poolIdleTimeout, cfg.poolMaxLifetime, logger)
	}
	return c
}

// Close ends the service's idle pooled server sessions, each with a
// Terminate. The broker calls it once the service has stopped (at shutdown,
// or when a reload replaces the service).
func (c *pgConnector) Close() error {
	if c.pool != nil {
		c.pool.closeAll()
	}
	return nil
}

// IdleConnections is how many idle server sessions the serverPool holds,
// for the broker's secretless_target_connections_idle gauge.
func (c *pgConnector) IdleConnections() int {
	if c.pool == nil {
		return 0
	}
	return c.pool.size()
}

// liveSessions is the cancel registry of every pg service in the process.
// A reload that changes a service builds a new connector while the old
// one's sessions go on; a CancelRequest for them (arriving on the new
// connector's listener) must still find them. PostgreSQL, too, matches a
// cancel key whatever the database or role of its session.
var liveSessions = newCancelRegistry()

// pgConnector is the connector of one service.
type pgConnector struct {
	logger  log.Logger
	cfg     *config
	cfgErr  error
	scram   *scramCache
	cancels *cancelRegistry
	pool    *serverPool // nil unless config serverPool is set

	// sessionHook, when set (by tests), sees every successful startup.
	sessionHook func(sessionInfo)
}

// sessionInfo describes a successful startup, for tests.
type sessionInfo struct {
	user, auth string
	tls        bool // the server leg is encrypted
	clientTLS  bool // the client leg is encrypted
	params     []param
}

// nopLogger is used when the broker passes no logger.
type nopLogger struct{}

func (nopLogger) Debugf(string, ...any)              {}
func (nopLogger) Infof(string, ...any)               {}
func (nopLogger) Warnf(string, ...any)               {}
func (nopLogger) Errorf(string, ...any)              {}
func (nopLogger) Panicf(f string, a ...any)          { panic(fmt.Sprintf(f, a...)) }
func (nopLogger) Debug(...any)                       {}
func (nopLogger) Info(...any)                        {}
func (nopLogger) Warn(...any)                        {}
func (nopLogger) Error(...any)                       {}
func (nopLogger) Panic(a ...any)                     { panic(a) }
func (nopLogger) Debugln(...any)                     {}
func (nopLogger) Infoln(...any)                      {}
func (nopLogger) Warnln(...any)                      {}
func (nopLogger) Errorln(...any)                     {}
func (nopLogger) Panicln(a ...any)                   { panic(a) }
func (nopLogger) DebugEnabled() bool                 { return false }
func (nopLogger) Prefix() string                     { return "" }
func (l nopLogger) CopyWith(string, bool) log.Logger { return l }

var (
	_ tcp.Plugin      = plugin{}
	_ tcp.Validator   = plugin{}
	_ tcp.Connector   = (*pgConnector)(nil)
	_ io.Closer       = (*pgConnector)(nil)
	_ tcp.IdleCounter = (*pgConnector)(nil)
	_ log.Logger      = nopLogger{}
)
