package broker

import (
	"github.com/secretless-broker/secretless-broker/internal/connectors/aws"
	"github.com/secretless-broker/secretless-broker/internal/connectors/basicauth"
	"github.com/secretless-broker/secretless-broker/internal/connectors/generichttp"
	"github.com/secretless-broker/secretless-broker/internal/connectors/pg"
	"github.com/secretless-broker/secretless-broker/internal/registry"
	"github.com/secretless-broker/secretless-broker/sdk"
)

// builtinSource is the registry Source of compiled-in connectors.
const builtinSource = "built-in"

// Builtins returns the connectors compiled into the broker. They are
// registered exactly like plugins.
func Builtins() []registry.Entry {
	return []registry.Entry{
		{ID: pg.ID, Type: sdk.TypeTCPConnector, Description: pg.Description, Source: builtinSource, TCP: pg.Plugin()},
		{ID: basicauth.ID, Type: sdk.TypeHTTPConnector, Description: basicauth.Description, Source: builtinSource, HTTP: basicauth.Plugin()},
		{ID: generichttp.ID, Type: sdk.TypeHTTPConnector, Description: generichttp.Description, Source: builtinSource, HTTP: generichttp.Plugin()},
		{ID: aws.ID, Type: sdk.TypeHTTPConnector, Description: aws.Description, Source: builtinSource, HTTP: aws.Plugin()},
	}
}
