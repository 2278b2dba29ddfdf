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
