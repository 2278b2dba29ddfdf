package basicauth

import (
	"net/http"
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

func TestConnect(t *testing.T) {
	tests := []struct {
		name    string
		creds   connector.CredentialValuesByID
		want    string
		wantErr string
	}{
		{name: "sets header", creds: connector.CredentialValuesByID{"username": []byte("Aladdin"), "password": []byte("open sesame")},
			want: "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="}, // RFC 7617 example
		{name: "empty password allowed", creds: connector.CredentialValuesByID{"username": []byte("u"), "password": {}}, want: "Basic dTo="},
		{name: "password may hold a colon", creds: connector.CredentialValuesByID{"username": []byte("u"), "password": []byte("a:b")}, want: "Basic dTphOmI="},
		{name: "missing password", creds: connector.CredentialValuesByID{"username": []byte("u")}, wantErr: "credential password is missing"},
		{name: "missing username", creds: connector.CredentialValuesByID{"password": []byte("p")}, wantErr: "credential username is missing"},
		{name: "colon in username", creds: connector.CredentialValuesByID{"username": []byte("a:b"), "password": []byte("p")}, wantErr: "contains a colon"},
		{name: "line break", creds: connector.CredentialValuesByID{"username": []byte("u"), "password": []byte("p\r\nX: y")}, wantErr: "line break"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "http://h/", nil)
			r.Header.Add("Authorization", "Basic fake1")
			r.Header.Add("Authorization", "Basic fake2")
			err := Plugin().NewConnector(nil).Connect(r, tt.creds)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if p := tt.creds["password"]; len(p) > 0 && strings.Contains(err.Error(), string(p)) {
					t.Errorf("error reveals the password")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.creds.Zero()
			if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != tt.want {
				t.Errorf("Authorization = %q, want [%q]", got, tt.want)
			}
		})
	}
}

func TestValidateConfig(t *testing.T) {
	v := Plugin().(sdkhttp.Validator)
	for _, ok := range []string{"", "{}", "null"} {
		if err := v.ValidateConfig([]byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	if err := v.ValidateConfig([]byte("username: x\n")); err == nil {
		t.Error("config key accepted")
	}
}

func TestValidateCredentials(t *testing.T) {
	lit := func(kv ...string) connector.CredentialValuesByID {
		c := connector.CredentialValuesByID{}
		for i := 0; i+1 < len(kv); i += 2 {
			c[kv[i]] = []byte(kv[i+1])
		}
		return c
	}
	both := []string{"username", "password"}
	tests := []struct {
		name    string
		names   []string
		literal connector.CredentialValuesByID
		want    string // "" means valid
	}{
		{"from providers", both, nil, ""},
		{"literal values", both, lit("username", "alice", "password", "pw"), ""},
		{"password missing", []string{"username"}, nil, "credential password is missing"},
		{"colon in a literal username", both, lit("username", "al:ice"), "credential username: contains a colon"},
		{"colon in a literal password is fine", both, lit("username", "alice", "password", "p:w"), ""},
		{"line break in a literal password", both, lit("password", "p\nw"), "credential password: contains a line break or NUL"},
		{"password from a file written with echo", both, lit("password", "pw\n"), "credential password: contains a line break or NUL (it ends with a line break: a file written with echo has one"},
		{"misspelt credential", []string{"username", "password", "pasword"}, nil, `credential pasword: not a basic_auth credential; did you mean "password"?`},
		{"unrelated extra credential", []string{"username", "password", "realm"}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := plugin{}.ValidateCredentials(nil, tc.names, tc.literal)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
