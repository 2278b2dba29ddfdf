package httpproxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

type statusErr struct{ msg string }

func (e statusErr) Error() string   { return e.msg }
func (e statusErr) HTTPStatus() int { return http.StatusBadRequest }

// TestConnectorErrorTextOnlyWhenPublic: a connector's 4xx error text reaches
// the client only for routes marked PublicErrors (built-in connectors); a
// plugin's text (which could hold an encoded secret) never does.
func TestConnectorErrorTextOnlyWhenPublic(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer target.Close()
	const text = "bad request: c2VjcmV0LXRva2Vu"
	failing := sdkhttp.ConnectorFunc(func(*http.Request, connector.CredentialValuesByID) error { return statusErr{text} })
	for _, public := range []bool{true, false} {
		name := "plugin"
		if public {
			name = "built-in"
		}
		t.Run(name, func(t *testing.T) {
			s, _ := startProxy(t, []Route{{Service: "svc", Match: []*regexp.Regexp{regexp.MustCompile(".")}, Connector: failing, PublicErrors: public}}, Options{})
			resp, err := proxyClient(s, nil).Get(target.URL + "/x")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if shown := strings.Contains(string(body), text); shown != public {
				t.Fatalf("error text shown = %v, want %v (body %q)", shown, public, body)
			}
		})
	}
}
