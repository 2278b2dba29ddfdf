package connector

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestCredentialValuesNeverPrint(t *testing.T) {
	c := CredentialValuesByID{"password": []byte("s3cr3t-value"), "host": []byte("db")}
	var logBuf bytes.Buffer
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("creds", "c", c)
	outputs := map[string]string{
		"%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c),
		"%s": fmt.Sprintf("%s", c), "%q": fmt.Sprintf("%q", c), "%x": fmt.Sprintf("%x", c),
		"String": c.String(), "slog": logBuf.String(),
	}
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(out, "s3cr3t") || strings.Contains(out, fmt.Sprintf("%x", "s3cr3t")) {
				t.Fatalf("secret printed: %s", out)
			}
			if !strings.Contains(out, "password:[REDACTED]") {
				t.Fatalf("names missing: %s", out)
			}
		})
	}
}

func TestZero(t *testing.T) {
	a, b := []byte("one"), []byte("two!")
	c := CredentialValuesByID{"a": a, "b": b}
	c.Zero()
	if !bytes.Equal(a, []byte{0, 0, 0}) || !bytes.Equal(b, []byte{0, 0, 0, 0}) {
		t.Fatalf("not zeroed: %v %v", a, b)
	}
}
