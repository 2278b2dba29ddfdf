package pg

import (
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

func TestValidateCredentials(t *testing.T) {
	lit := func(kv ...string) connector.CredentialValuesByID {
		c := connector.CredentialValuesByID{}
		for i := 0; i+1 < len(kv); i += 2 {
			c[kv[i]] = []byte(kv[i+1])
		}
		return c
	}
	tests := []struct {
		name    string
		names   []string
		literal connector.CredentialValuesByID
		want    string // "" means valid
	}{
		{"all from providers", []string{"host", "username", "password"}, nil, ""},
		{"literal host and port", []string{"host", "port", "username", "password"}, lit("host", "db", "port", "6432"), ""},
		{"missing host", []string{"username", "password"}, nil, "credential host: missing"},
		{"missing username", []string{"host", "password"}, lit("host", "db"), "credential username: missing"},
		{"user instead of username", []string{"host", "user", "password"}, lit("host", "db", "user", "app"),
			"credential user: not a pg credential: the login role is the username credential (rename user to username)"},
		{"bad literal sslmode", []string{"host", "username", "sslmode"}, lit("sslmode", "requir"), "credential sslmode: must be one of"},
		{"bad literal port", []string{"host", "username", "port"}, lit("port", "5432x"), "credential port: not a port number"},
		{"sslcert without sslkey", []string{"host", "username", "sslcert"}, nil, "credential sslkey: missing (sslcert is set)"},
		{"sslkey without sslcert", []string{"host", "username", "sslkey"}, nil, "credential sslcert: missing (sslkey is set)"},
		{"provider sslrootcert with verify-full", []string{"host", "username", "sslmode", "sslrootcert"}, lit("sslmode", "verify-full"), ""},
		{"literal sslrootcert file missing", []string{"host", "username", "sslmode", "sslrootcert"}, lit("sslmode", "verify-ca", "sslrootcert", "/nonexistent/ca.pem"), "sslrootcert"},
		{"user is refused", []string{"host", "username", "user"}, nil, "credential user: not allowed"},
		{"misspelt password", []string{"host", "username", "passwrod"}, nil, `credential passwrod: not a pg credential; did you mean "password"?`},
		{"capitalised password", []string{"host", "username", "Password"}, nil, `did you mean "password"?`},
		{"misspelt sslmode", []string{"host", "username", "sslmod"}, lit("sslmod", "disable"), `did you mean "sslmode"?`},
		{"startup parameters pass", []string{"host", "username", "application_name", "search_path", "DateStyle", "options", "replication"}, nil, ""},
		{"libpq dbname", []string{"host", "username", "dbname"}, nil, "credential dbname: not allowed: a libpq connection option, not a startup parameter; use the database credential"},
		{"libpq sslpassword", []string{"host", "username", "sslpassword"}, lit("sslpassword", "key-pass-secret"), "credential sslpassword: not allowed"},
		{"libpq sslcrl", []string{"host", "username", "sslcrl"}, nil, "credential sslcrl: not allowed"},
		{"libpq channel_binding", []string{"host", "username", "channel_binding"}, nil, "credential channel_binding: not allowed"},
		{"libpq connect_timeout", []string{"host", "username", "connect_timeout"}, nil, "use connectTimeout"},
		{"NUL in username", []string{"host", "username"}, lit("username", "u\x00application_name\x00x"), "credential username: contains a NUL byte"},
		{"NUL in database", []string{"host", "username", "database"}, lit("database", "d\x00options\x00-c x=1"), "credential database: contains a NUL byte"},
		{"host with port", []string{"host", "username"}, lit("host", "db.example:5432"), "credential host: has a port"},
		{"ipv6 host with port", []string{"host", "username"}, lit("host", "[::1]:5432"), "credential host: write an IPv6 address without brackets"},
		{"ipv6 host", []string{"host", "username"}, lit("host", "::1"), ""},
		{"several hosts", []string{"host", "username"}, lit("host", "h1,h2"), "credential host: lists several hosts"},
		{"relative socket directory", []string{"host", "username"}, lit("host", "run/postgresql"), "must be an absolute path"},
		{"socket directory", []string{"host", "username"}, lit("host", "/run/postgresql"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := plugin{}.ValidateCredentials(nil, tt.names, tt.literal)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			for _, n := range []string{"password", "sslpassword"} {
				if v := tt.literal[n]; len(v) > 0 && strings.Contains(err.Error(), string(v)) {
					t.Fatalf("error quotes the %s: %v", n, err)
				}
			}
		})
	}
}
