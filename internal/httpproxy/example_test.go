package httpproxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/connectors/generichttp"
	"github.com/secretless-broker/secretless-broker/internal/httpproxy"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdklog "github.com/secretless-broker/secretless-broker/sdk/log"
)

type resources struct{ cfg []byte }

func (r resources) Config() []byte        { return r.cfg }
func (r resources) Logger() sdklog.Logger { return nil }

// Example shows the wiring the broker does for one HTTP service.
func Example() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "target saw X-Api-Key=%s", r.Header.Get("X-Api-Key"))
	}))
	defer api.Close()

	block := []byte("authenticateURLsMatching: '^http://127\\.0\\.0\\.1:'\nheaders:\n  X-Api-Key: '{{ .key }}'\n")
	cfg, rest, err := httpproxy.ParseConfig(block) // proxy-level keys; rest is for the connector
	if err != nil {
		panic(err)
	}
	plugin := generichttp.Plugin()
	if err := plugin.(interface{ ValidateConfig([]byte) error }).ValidateConfig(rest); err != nil {
		panic(err)
	}
	fetch := func(context.Context) (connector.CredentialValuesByID, error) { // per request
		return connector.CredentialValuesByID{"key": []byte("k-123")}, nil
	}
	route := cfg.Route("api", plugin.NewConnector(resources{rest}), fetch)
	opts, _ := httpproxy.ListenerOptions(cfg)

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := httpproxy.New(l, []httpproxy.Route{route}, nil, opts)
	go func() { _ = srv.Serve() }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()

	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: l.Addr().String()})}}
	resp, err := client.Get(api.URL + "/v1/things")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(b))
	// Output: 200 target saw X-Api-Key=k-123
}
