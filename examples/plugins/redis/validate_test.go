package main

import (
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

func TestValidateCredentials(t *testing.T) {
	tests := []struct {
		name    string
		names   []string
		literal connector.CredentialValuesByID
		want    string
	}{
		{"complete", []string{"host", "port", "password"}, connector.CredentialValuesByID{"port": []byte("6379")}, ""},
		{"no password", []string{"host"}, nil, "credential password is missing"},
		{"no host", []string{"password"}, nil, "credential host is missing"},
		{"bad port", []string{"host", "password", "port"}, connector.CredentialValuesByID{"port": []byte("63x")}, "is not a port number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := plugin{}.ValidateCredentials(nil, tt.names, tt.literal)
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
