package generichttp

import (
	"strings"
	"testing"
)

func TestValidateCredentials(t *testing.T) {
	tests := []struct {
		name  string
		block string
		names []string
		want  string
	}{
		{"header uses a declared credential", "headers:\n  Authorization: 'token {{ .token }}'\n", []string{"token"}, ""},
		{"header typo", "headers:\n  Authorization: 'token {{ .tokn }}'\n", []string{"token"}, `config.headers.Authorization: refers to a credential the service does not declare (it has: token)`},
		{"query param typo", "queryParams:\n  key: '{{ .apikey }}'\n", []string{"api_key"}, "config.queryParams.key: refers to a credential"},
		{"base64 helper", "headers:\n  Authorization: 'Basic {{ printf \"%s:%s\" .u .p | base64 }}'\n", []string{"u", "p"}, ""},
		{"validation of an undeclared credential", "headers:\n  X: '{{ .other }}'\ncredentialValidations:\n  token: '^[a-z]+$'\n", []string{"other"}, `credentialValidations.token: the service declares no credential "token"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := plugin{}.ValidateCredentials([]byte(tt.block), tt.names, nil)
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
