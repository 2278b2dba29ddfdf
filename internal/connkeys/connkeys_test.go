package connkeys

import (
	"strings"
	"testing"
)

func TestUnknown(t *testing.T) {
	known := []string{"headers", "queryParams"}
	tests := []struct {
		name, block string
		known       []string
		want        []string // lines, each must appear; none means no error
	}{
		{"empty", "", nil, nil},
		{"null", "~", nil, nil},
		{"known keys", "headers: {}\nqueryParams: {}\n", known, nil},
		{"typo of a connector key", "header: {}\n", known, []string{`config.header: unknown key; did you mean "headers"?`}},
		{"typo of a proxy key", "forceSSl: true\n", known, []string{`config.forceSSl: unknown key; did you mean "forceSSL"?`}},
		{"connector without keys", "region: us-east-1\nregoin: x\n", nil, []string{
			"config.region: unknown key: aws takes no config keys of its own, and the proxy reads authenticateURLsMatching",
			"config.regoin: unknown key: aws takes no config keys of its own"}},
		{"unknown key of a connector with keys", "whatever: 1\n", known, []string{"config.whatever: unknown key: aws takes headers, queryParams, and the proxy reads"}},
		{"not a mapping", "- a\n", known, []string{"config: must be a mapping"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Unknown([]byte(tc.block), "aws", tc.known)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestUnknownUnder(t *testing.T) {
	known := []string{"consumer_key", "token_secret"}
	tests := []struct{ name, block, want string }{
		{"known", "oauth1: {consumer_key: a, token_secret: b}\n", ""},
		{"typo", "oauth1: {consumer_key: a, token_secert: b}\n", `config.oauth1.token_secert: unknown key; did you mean "token_secret"?`},
		{"far off", "oauth1: {realm: x}\n", "config.oauth1.realm: unknown key (known: consumer_key, token_secret)"},
		{"absent", "headers: {}\n", ""},
		{"not a mapping", "oauth1: 3\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := UnknownUnder([]byte(tc.block), "oauth1", known)
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
