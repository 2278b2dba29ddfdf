// Package redact removes credential values from text the broker writes
// (logged errors, panics, connector log lines): the last line of defence
// against a connector, possibly a third-party plugin, that put a secret
// into a message. A value is found as written and in the forms Go's fmt
// and common encodings give it: quoted, as a []byte printed with %v, in
// hex, percent-encoded as in a URL, and in base64 (also inside a longer
// encoded text, such as an HTTP Basic credential). The password of a URL held in a public credential
// (url, endpoint ...) is a secret too.
package redact

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// Mark replaces every secret found.
const Mark = "[REDACTED]"

// minEncoded is the shortest encoded piece searched for inside a longer
// base64 text (6 bytes of the secret): shorter ones would match by chance.
const minEncoded = 8

var public = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range connector.PublicCredentialNames {
		m[n] = true
	}
	return m
}()

// Secrets returns the secret values among creds: every credential not in
// connector.PublicCredentialNames, at least connector.MinSecretLen long,
// and the password of a public credential that is a URL.
func Secrets(creds connector.CredentialValuesByID) [][]byte {
	var out [][]byte
	for name, v := range creds {
		if !public[name] {
			if len(v) >= connector.MinSecretLen {
				out = append(out, v)
			}
			continue
		}
		if pw := urlPassword(v); len(pw) >= connector.MinSecretLen {
			out = append(out, pw)
		}
	}
	return out
}

func urlPassword(v []byte) []byte {
	if !strings.Contains(string(v), "://") {
		return nil
	}
	u, err := url.Parse(string(v))
	if err != nil || u.User == nil {
		return nil
	}
	pw, ok := u.User.Password()
	if !ok {
		return nil
	}
	return []byte(pw)
}

// forms lists the texts that reveal v, longest first.
func forms(v []byte) []string {
	s := string(v)
	out := []string{s, fmt.Sprint(v), hex.EncodeToString(v), strings.ToUpper(hex.EncodeToString(v))}
	if q := strconv.Quote(s); q[1:len(q)-1] != s {
		out = append(out, q[1:len(q)-1])
	}
	// As a URL carries it: in a query (space as +) or a path (as %20).
	for _, e := range []string{url.QueryEscape(s), url.PathEscape(s)} {
		if e != s {
			out = append(out, e)
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		out = append(out, enc.EncodeToString(v))
		// Inside a longer encoded text the secret starts at one of three
		// offsets from a 3-byte boundary; the whole groups it fills encode
		// the same whatever surrounds them.
		for r := 0; r < 3 && r < len(v); r++ {
			n := (len(v) - r) / 3 * 3
			if e := enc.WithPadding(base64.NoPadding).EncodeToString(v[r : r+n]); len(e) >= minEncoded {
				out = append(out, e)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// String returns s with every form of each secret replaced by Mark.
func String(s string, secrets [][]byte) string {
	for _, v := range secrets {
		if len(v) < connector.MinSecretLen {
			continue
		}
		for _, f := range forms(v) {
			if f != "" && strings.Contains(s, f) {
				s = strings.ReplaceAll(s, f, Mark)
			}
		}
	}
	return s
}

// Error returns err with its text redacted (err itself when nothing was
// found).
func Error(err error, creds connector.CredentialValuesByID) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if out := String(msg, Secrets(creds)); out != msg {
		return redactedError(out)
	}
	return err
}

type redactedError string

func (e redactedError) Error() string { return string(e) }

// Live is the set of secret values that a service's connections hold at
// the moment (added when they are fetched, removed before they are
// zeroed), for redacting the service's connector log lines.
type Live struct {
	mu   sync.Mutex
	sets map[*[][]byte]struct{}
}

// Add records creds' secrets until the returned function is called, which
// must happen before creds are zeroed.
func (l *Live) Add(creds connector.CredentialValuesByID) (remove func()) {
	if l == nil {
		return func() {}
	}
	s := Secrets(creds)
	if len(s) == 0 {
		return func() {}
	}
	p := &s
	l.mu.Lock()
	if l.sets == nil {
		l.sets = make(map[*[][]byte]struct{})
	}
	l.sets[p] = struct{}{}
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.sets, p)
		l.mu.Unlock()
	}
}

// String redacts s with every live secret.
func (l *Live) String(s string) string {
	if l == nil {
		return s
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for p := range l.sets {
		s = String(s, *p)
	}
	return s
}
