package httpproxy

import (
	"io"
	"net/http"
	"testing"

	"github.com/secretless-broker/secretless-broker/internal/connectors/generichttp"
)

// BenchmarkProxySmall measures one small request through the proxy with a
// generic_http header connector (client, proxy and target in one process).
func BenchmarkProxySmall(b *testing.B) {
	tg := newTarget(b, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello, world\n")
	}))
	rt, _ := routeFromYAML(b, "bench", "authenticateURLsMatching: '^http://'\nheaders:\n  X-Api-Key: '{{ .key }}'\n",
		generichttp.Plugin(), staticFetch(map[string]string{"key": "bench-key"}))
	s, _ := startProxy(b, []Route{rt}, Options{})
	c := proxyClient(s, nil)
	u := "http://" + tg.hostPort() + "/small"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(u)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
