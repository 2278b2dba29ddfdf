package typo

import "testing"

func TestClosest(t *testing.T) {
	ids := []string{"pg", "basic_auth", "generic_http", "aws"}
	aliases := map[string]string{"postgres": "pg"}
	tests := []struct{ typed, want string }{
		{"postgres", "pg"},
		{"Postgres", "pg"},
		{"basic-auth", "basic_auth"},
		{"BasicAuth", "basic_auth"},
		{"generic_htp", "generic_http"},
		{"awz", "aws"},
		{"pgx", "pg"},
		{"redis", ""},
		{"mysql", ""},
	}
	for _, tc := range tests {
		t.Run(tc.typed, func(t *testing.T) {
			if got := Closest(tc.typed, ids, aliases); got != tc.want {
				t.Errorf("Closest(%q) = %q, want %q", tc.typed, got, tc.want)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"a", "", 1}, {"kitten", "sitting", 3}, {"password", "passwrod", 2}} {
		if got := EditDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("EditDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
