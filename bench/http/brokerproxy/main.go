// Command brokerproxy runs the broker's HTTP forward proxy (internal/httpproxy)
// with a generic_http service that adds one header, as the HTTP benchmark's
// system under test. Credentials are fetched per request, as in the broker.
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"net"
	"os"

	"github.com/secretless-broker/secretless-broker/internal/connectors/generichttp"
	"github.com/secretless-broker/secretless-broker/internal/httpproxy"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdklog "github.com/secretless-broker/secretless-broker/sdk/log"
)

type res struct{ cfg []byte }

func (r res) Config() []byte        { return r.cfg }
func (r res) Logger() sdklog.Logger { return nil }

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "listen address")
	flag.Parse()
	cfg, rest, err := httpproxy.ParseConfig([]byte("authenticateURLsMatching: '^http://'\nheaders:\n  X-Api-Key: '{{ .key }}'\n"))
	if err != nil {
		log.Fatal(err)
	}
	fetch := func(context.Context) (connector.CredentialValuesByID, error) {
		return connector.CredentialValuesByID{"key": []byte("bench-key")}, nil
	}
	route := cfg.Route("bench", generichttp.Plugin().NewConnector(res{rest}), fetch)
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	log.Printf("listening on %s", l.Addr())
	log.Fatal(httpproxy.New(l, []httpproxy.Route{route}, logger, httpproxy.Options{}).Serve())
}
