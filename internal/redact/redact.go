// Package redact removes credential values from text the broker writes
// (logged errors, panics, connector log lines): the last line of defence
// against a connector, possibly a third-party plugin, that put a secret
// into a message. A value is found as written and in the forms Go's fmt
// and common encodings give it: quoted, as a []byte printed with %v or
// %#v (also inside a longer one), in hex (%x, % x), percent-encoded as in a URL, and in base64 (also inside a longer
// encoded text, such as an HTTP Basic credential). The password of a URL held in a public credential
// (url, endpoint ...) is a secret too.
package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"regexp"
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

// formsOf lists the texts that reveal v, longest first, as byte slices
// that Forms.Zero clears.
func formsOf(v []byte) [][]byte {
	out := [][]byte{bytes.Clone(v)}
	// Printed as a []byte, also inside a longer one: %v (decimal bytes
	// between spaces), %#v (0x12, 0x34), and as hex with % x.
	var dec, gov, spaced []byte
	for i, c := range v {
		if i > 0 {
			dec, gov, spaced = append(dec, ' '), append(gov, ", "...), append(spaced, ' ')
		}
		dec = strconv.AppendUint(dec, uint64(c), 10)
		gov = append(append(gov, "0x"...), hex.EncodeToString([]byte{c})...)
		spaced = append(spaced, hex.EncodeToString([]byte{c})...)
	}
	lower := make([]byte, hex.EncodedLen(len(v)))
	hex.Encode(lower, v)
	whole := append(append([]byte{'['}, dec...), ']') // the whole of a %v, bracket and all
	out = append(out, whole, dec, gov, spaced, bytes.ToUpper(spaced), lower, bytes.ToUpper(lower))
	s := string(v)
	if q := strconv.AppendQuote(nil, s); !bytes.Equal(q[1:len(q)-1], v) {
		out = append(out, q[1:len(q)-1])
	}
	// As a URL carries it: in a query (space as +) or a path (as %20).
	for _, e := range []string{url.QueryEscape(s), url.PathEscape(s)} {
		if e != s {
			out = append(out, []byte(e))
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		whole := make([]byte, enc.EncodedLen(len(v)))
		enc.Encode(whole, v)
		out = append(out, whole)
		// Inside a longer encoded text the secret starts at one of three
		// offsets from a 3-byte boundary; the whole groups it fills encode
		// the same whatever surrounds them.
		raw := enc.WithPadding(base64.NoPadding)
		for r := 0; r < 3 && r < len(v); r++ {
			n := (len(v) - r) / 3 * 3
			if e := make([]byte, raw.EncodedLen(n)); len(e) >= minEncoded {
				raw.Encode(e, v[r:r+n])
				out = append(out, e)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// Forms is the set of texts that reveal some secrets, computed once for
// redacting many texts (the headers of a response, say). Zero clears it.
type Forms struct {
	f   [][]byte
	raw [][]byte // the secrets, for looking inside base64 runs
}

// NewForms computes the forms of each secret long enough to look for.
func NewForms(secrets [][]byte) *Forms {
	fs := &Forms{}
	for _, v := range secrets {
		if len(v) >= connector.MinSecretLen {
			fs.f = append(fs.f, formsOf(v)...)
			fs.raw = append(fs.raw, bytes.Clone(v))
		}
	}
	return fs
}

// gluedPrefix is text that a base64 run can start with that is not base64
// data: a URL's "//host/" and an escaped "Basic " or "Bearer ".
var gluedPrefix = regexp.MustCompile(`^(?:[A-Za-z0-9._~-]*//[A-Za-z0-9._~-]+/|(?i:basic|bearer)(?:\+|%20))`)

// b64Run is a run of text that may be base64 (standard or URL alphabet),
// also percent-encoded (%2B, %2F, %3D) as in a URL.
var b64Run = regexp.MustCompile(`(?:[A-Za-z0-9+/_-]|%[0-9A-Fa-f]{2}){6,}(?:=|%3[Dd]){0,2}`)

// revealedBy reports whether a base64 run decodes to text holding a secret
// (such as an HTTP Basic credential "user:password"): the encoded groups at
// the secret's ends mix in its neighbours' bits, so no fixed form of the
// secret alone finds all of it there. The run may start before the base64
// does ("Basic+...", "cb/..."): each of the four alignments is decoded, as
// is base64 inside the decoded text (a value encoded twice).
func (fs *Forms) revealedBy(tok []byte) bool { return fs.revealedAt(tok, 3) }

func (fs *Forms) revealedAt(tok []byte, depth int) bool {
	if bytes.IndexByte(tok, '%') >= 0 && depth > 0 {
		// Decoded, the run may hold other characters ("Basic%20..."):
		// each base64 run in it is looked at.
		dec := percentDecode(tok)
		defer clear(dec)
		for _, run := range b64Run.FindAll(dec, -1) {
			if fs.revealedAt(run, depth-1) {
				return true
			}
		}
	}
	dec := make([]byte, base64.RawStdEncoding.DecodedLen(len(tok)))
	defer clear(dec)
	for off := 0; off < 4 && off < len(tok); off++ {
		t := bytes.TrimRight(tok[off:], "=")
		if len(t)%4 == 1 {
			t = t[:len(t)-1] // a lone last character encodes nothing whole
		}
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			n, err := enc.Decode(dec, t)
			if err != nil {
				continue
			}
			for _, v := range fs.raw {
				if bytes.Contains(dec[:n], v) {
					return true
				}
			}
			if depth > 1 {
				for _, inner := range b64Run.FindAll(dec[:n], -1) {
					if fs.revealedAt(inner, depth-1) {
						return true
					}
				}
			}
		}
	}
	return false
}

// percentDecode decodes the %XX escapes of b into a new slice, keeping
// anything else as it is.
func percentDecode(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '%' && i+2 < len(b) {
			if v, err := strconv.ParseUint(string(b[i+1:i+3]), 16, 8); err == nil {
				out = append(out, byte(v))
				i += 2
				continue
			}
		}
		out = append(out, b[i])
	}
	return out
}

// ShownIgnoringCase reports whether s shows a secret in any of its forms
// with letter case disregarded, as in an HTTP header name, which Go
// rewrites to its canonical case.
func (fs *Forms) ShownIgnoringCase(s string) bool {
	if fs == nil {
		return false
	}
	if fs.String(s) != s {
		return true
	}
	low := bytes.ToLower([]byte(s))
	for _, f := range fs.f {
		if bytes.Contains(low, bytes.ToLower(f)) {
			return true
		}
	}
	return false
}

// Empty reports whether there is nothing to look for.
func (fs *Forms) Empty() bool { return fs == nil || len(fs.f) == 0 }

// String returns s with every form replaced by Mark.
func (fs *Forms) String(s string) string {
	if fs.Empty() {
		return s
	}
	b, found := []byte(s), false // bytes: no copy of a form is made
	// Base64 runs that decode to a secret go whole, before the forms below
	// could cut one into pieces that each reveal a part.
	b = b64Run.ReplaceAllFunc(b, func(tok []byte) []byte {
		if !fs.revealedBy(tok) {
			return tok
		}
		found = true
		// A URL's "//host/" or a scheme word and its escaped space
		// ("Basic+") glued in front is kept when the rest alone reveals
		// the secret; any other part of the run goes with it.
		if m := gluedPrefix.Find(tok); m != nil && len(m) < len(tok) && fs.revealedBy(tok[len(m):]) {
			return append(append([]byte(nil), m...), Mark...)
		}
		return []byte(Mark)
	})
	for _, f := range fs.f {
		if len(f) > 0 && bytes.Contains(b, f) {
			b, found = bytes.ReplaceAll(b, f, []byte(Mark)), true
		}
	}
	if !found {
		return s
	}
	return string(b)
}

// Zero clears the forms.
func (fs *Forms) Zero() {
	if fs == nil {
		return
	}
	for _, f := range fs.f {
		clear(f)
	}
	for _, v := range fs.raw {
		clear(v)
	}
	fs.f, fs.raw = nil, nil
}

// String returns s with every form of each secret replaced by Mark.
func String(s string, secrets [][]byte) string {
	fs := NewForms(secrets)
	defer fs.Zero()
	return fs.String(s)
}

// Error returns an error whose text is err's, redacted. It is a plain
// error whatever err is: printed with any verb, or wrapped with %w, it shows
// exactly that text, never what err's own Format, GoString or LogValue
// methods would. When nothing was redacted it unwraps to err, so errors.Is
// and errors.As still classify it; otherwise err is dropped.
func Error(err error, creds connector.CredentialValuesByID) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if out := String(msg, Secrets(creds)); out != msg {
		return &redactedError{msg: out}
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error // nil when the text was redacted
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// Format prints the text for every verb (%#v would show the fields).
func (e *redactedError) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", e.msg)
		return
	}
	_, _ = io.WriteString(f, e.msg)
}

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
