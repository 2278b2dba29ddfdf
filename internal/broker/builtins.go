package broker

import (
	"io/fs"
	"os"

	"github.com/secretless-broker/secretless-broker/internal/connectors/pg"
	"github.com/secretless-broker/secretless-broker/internal/registry"
	"github.com/secretless-broker/secretless-broker/sdk"
	sdklog "github.com/secretless-broker/secretless-broker/sdk/log"
)

type sdklogLogger = sdklog.Logger

// Builtins returns the connectors compiled into the broker. They are
// registered exactly like plugins.
func Builtins() []registry.Entry {
	return []registry.Entry{
		{ID: pg.ID, Type: sdk.TypeTCPConnector, Description: "PostgreSQL", Source: "built-in", TCP: pg.Plugin()},
	}
}

// removeSocket deletes a unix socket file the broker created, and nothing else.
func removeSocket(path string) {
	if st, err := os.Lstat(path); err == nil && st.Mode().Type() == fs.ModeSocket {
		_ = os.Remove(path)
	}
}
