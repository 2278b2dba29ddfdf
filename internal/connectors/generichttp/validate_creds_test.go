package generichttp

import (
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

func TestValidateCredentials(t *testing.T) {
	tests := []struct {
		name  string
		block string
		names []string
		known connector.CredentialValuesByID
		want  string
	}{
		{"header uses a declared credential", "headers:\n  Authorization: 'token {{ .token }}'\n", []string{"token"}, nil, ""},
		{"header typo", "headers:\n  Authorization: 'token {{ .tokn }}'\n", []string{"token"}, nil, `config.headers.Authorization: refers to a credential the service does not declare (it has: token)`},
		{"query param typo", "queryParams:\n  key: '{{ .apikey }}'\n", []string{"api_key"}, nil, "config.queryParams.key: refers to a credential"},
		{"base64 helper", "headers:\n  Authorization: 'Basic {{ printf \"%s:%s\" .u .p | base64 }}'\n", []string{"u", "p"}, nil, ""},
		{"validation of an undeclared credential", "headers:\n  X: '{{ .other }}'\ncredentialValidations:\n  token: '^[a-z]+$'\n", []string{"other"}, nil, `credentialValidations.token: the service declares no credential "token"`},
		// Values known at load (written in the file, or from env and file
		// providers) are checked as each request checks them.
		{"known value matching its pattern", "headers:\n  X: '{{ .token }}'\ncredentialValidations:\n  token: '^[A-Za-z0-9]+$'\n", []string{"token"},
			connector.CredentialValuesByID{"token": []byte("abc123")}, ""},
		{"known value failing its pattern", "headers:\n  X: '{{ .token }}'\ncredentialValidations:\n  token: '^[A-Za-z0-9]+$'\n", []string{"token"},
			connector.CredentialValuesByID{"token": []byte("abc123\n")}, "credential token: does not match its credentialValidations pattern (it ends with a line break"},
		{"known value breaking a header", "headers:\n  Authorization: 'Bearer {{ .token }}'\n", []string{"token"},
			connector.CredentialValuesByID{"token": []byte("abc123\n")}, "config.headers.Authorization: would contain a line break or NUL (credential token ends with a line break"},
		{"unknown value stands in", "headers:\n  Authorization: 'Bearer {{ .token }}'\ncredentialValidations:\n  token: '^[a-z]+$'\n", []string{"token"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := plugin{}.ValidateCredentials([]byte(tt.block), tt.names, tt.known)
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
