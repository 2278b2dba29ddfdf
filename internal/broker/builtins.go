package broker

import (
	"github.com/secretless-broker/secretless-broker/internal/connectors/aws"
	"github.com/secretless-broker/secretless-broker/internal/connectors/basicauth"
	"github.com/secretless-broker/secretless-broker/internal/connectors/generichttp"
	"github.com/secretless-broker/secretless-broker/internal/connectors/pg"
	"github.com/secretless-broker/secretless-broker/internal/registry"
	"github.com/secretless-broker/secretless-broker/sdk"
)

// Builtins returns the connectors compiled into the broker. They are
// registered exactly like plugins.
func Builtins() []registry.Entry {
	return []registry.Entry{
		{ID: pg.ID, Type: sdk.TypeTCPConnector, Description: pg.Description, Source: "built-in", TCP: pg.Plugin()},
		{ID: basicauth.ID, Type: sdk.TypeHTTPConnector, Description: basicauth.Description, Source: "built-in", HTTP: basicauth.Plugin()},
		{ID: generichttp.ID, Type: sdk.TypeHTTPConnector, Description: generichttp.Description, Source: "built-in", HTTP: generichttp.Plugin()},
		{ID: aws.ID, Type: sdk.TypeHTTPConnector, Description: aws.Description, Source: "built-in", HTTP: aws.Plugin()},
	}
}
