package logging

import (
	"bytes"
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/internal/redact"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// TestCopyWithPrefixRedacted: a prefix a connector builds from a credential
// is redacted on every line, like the message, in both formats; a copy of a
// copy carries one prefix, its own.
func TestCopyWithPrefixRedacted(t *testing.T) {
	const secret = `leakSecret"Q\7`
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			var live redact.Live
			creds := connector.CredentialValuesByID{"password": []byte(secret)}
			done := live.Add(creds)
			a := ForService(NewFormat(&buf, true, format), "svc", &live)
			a.CopyWith("PFX:"+secret, true).Infof("prefixed line")
			a.CopyWith("first", true).CopyWith("second", true).Debugf("nested")
			// A copy made during the handshake and used after it, when the
			// secret is no longer live.
			later := a.CopyWith("LATER:"+secret, true)
			done()
			later.Infof("after the handshake")
			out := buf.String()
			if strings.Contains(out, "leakSecret") {
				t.Errorf("secret in the log:\n%s", out)
			}
			if !strings.Contains(out, "PFX:"+redact.Mark) {
				t.Errorf("prefix missing or not redacted:\n%s", out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 3 || strings.Contains(lines[1], "first") || !strings.Contains(lines[1], "second") {
				t.Errorf("nested copy's line %q, want only the prefix second", lines[1])
			}
			if !strings.Contains(out, "LATER:"+redact.Mark) {
				t.Errorf("prefix made during the handshake not redacted after it:\n%s", out)
			}
		})
	}
}

// TestStripQuoted: quoted peer data goes, with any escapes inside it; the
// rest of the message stays.
func TestStripQuoted(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"unsolicited response", `Unsolicited response received on idle HTTP channel starting with "you sent Bearer s3cret"; err=<nil>`,
			`Unsolicited response received on idle HTTP channel starting with "[peer data not logged]"; err=<nil>`},
		{"escaped quote inside", `missing colon: "a \"b\" s3cret\\"`, `missing colon: "[peer data not logged]"`},
		{"two quoted parts", `"x" and "y"`, `"[peer data not logged]" and "[peer data not logged]"`},
		{"nothing quoted", "http: Accept error: too many open files", "http: Accept error: too many open files"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := StripQuoted(tc.in); got != tc.want {
				t.Errorf("StripQuoted(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
