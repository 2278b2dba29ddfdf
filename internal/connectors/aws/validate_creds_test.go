package aws

import (
	"net/http"
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// TestValidateCredentials: the keys must be declared, and the values known
// at load must be keys a signature can carry.
func TestValidateCredentials(t *testing.T) {
	both := []string{"accessKeyId", "secretAccessKey"}
	tests := []struct {
		name  string
		names []string
		known connector.CredentialValuesByID
		want  string
	}{
		{"declared, values unknown", both, nil, ""},
		{"secret missing", []string{"accessKeyId"}, nil, "aws: credential secretAccessKey is missing"},
		{"good values", both, connector.CredentialValuesByID{"accessKeyId": []byte("AKIDEXAMPLE"), "secretAccessKey": []byte("wJalrXUtnFEMI/K7MDENG")}, ""},
		{"empty key id", both, connector.CredentialValuesByID{"accessKeyId": []byte("")}, "credential accessKeyId: is empty"},
		{"empty session token is no token", append(both, "accessToken"), connector.CredentialValuesByID{"accessToken": []byte("")}, ""},
		{"key id from a file written with echo", both, connector.CredentialValuesByID{"accessKeyId": []byte("AKIDEXAMPLE\n")},
			"credential accessKeyId: ends with a line break (a file written with echo has one"},
		{"misspelt session token", append(both, "acessToken"), nil, `credential acessToken: not an aws credential; did you mean "accessToken"?`},
		{"key id in another case", []string{"accessKeyID", "secretAccessKey"}, nil, `credential accessKeyID: not an aws credential; did you mean "accessKeyId"?`},
		{"blank inside the secret", both, connector.CredentialValuesByID{"secretAccessKey": []byte("abc def")},
			"credential secretAccessKey: holds a line break, NUL or blank"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := plugin{}.ValidateCredentials(nil, tt.names, tt.known)
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestConnectRefusesBadKey: a key from a provider that no signature can
// carry is the connector's error, with the hint, not a transport error
// that blames the target.
func TestConnectRefusesBadKey(t *testing.T) {
	c := Plugin().NewConnector(nil)
	r, err := http.NewRequest(http.MethodGet, "http://s3.example/bucket", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Connect(r, connector.CredentialValuesByID{"accessKeyId": []byte("AKIDEXAMPLE\n"), "secretAccessKey": []byte("s3cr3t")})
	if err == nil || !strings.Contains(err.Error(), "aws: credential accessKeyId: ends with a line break") {
		t.Fatalf("err = %v", err)
	}
}
