package redact

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

func TestString(t *testing.T) {
	const secret = "TopSecretValue42"
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name string
		text string
	}{
		{"as written", "password is " + secret},
		{"quoted with escapes", fmt.Sprintf("%q", "tab\t"+secret)},
		{"bytes with %v", fmt.Sprintf("v %v", []byte(secret))},
		{"hex", fmt.Sprintf("hex %x", secret)},
		{"upper hex", fmt.Sprintf("HEX %X", secret)},
		{"base64", "b64 " + b64([]byte(secret))},
		{"base64 url", "b64 " + base64.URLEncoding.EncodeToString([]byte(secret+"\xff\xfe"))},
		// The secret after 3, 2 and 4 bytes: each of the three alignments.
		{"inside basic auth, aligned", "Basic " + b64([]byte("us:"+secret))},
		{"inside basic auth, one byte off", "Basic " + b64([]byte("u:"+secret))},
		{"inside basic auth, two bytes off", "Basic " + b64([]byte("use:"+secret))},
		{"spaced hex", fmt.Sprintf("hex % x", secret)},
		{"spaced upper hex", fmt.Sprintf("HEX % X", []byte(secret))},
		{"prefixed hex", fmt.Sprintf("hex %#x", secret)},
		{"bytes with %#v", fmt.Sprintf("v %#v", []byte(secret))},
		{"struct with %+v", fmt.Sprintf("%+v", struct{ Key []byte }{[]byte(secret)})},
	}
	creds := connector.CredentialValuesByID{"password": []byte(secret)}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := String(tc.text, Secrets(creds))
			if !strings.Contains(got, Mark) {
				t.Fatalf("nothing redacted in %q", got)
			}
			// The first and last bytes of the secret, in each form.
			for _, leak := range []string{secret, "TopSecret", "Value42", b64([]byte(secret))[:12],
				"54 6f 70", "54 6F 70", "0x54, 0x6f", "84 111 112", "3432", "0x34, 0x32", "52 50"} {
				if strings.Contains(got, leak) {
					t.Errorf("%q still contains %q", got, leak)
				}
			}
		})
	}
}

func TestSecrets(t *testing.T) {
	tests := []struct {
		name  string
		creds connector.CredentialValuesByID
		want  []string
	}{
		{"secret credential", connector.CredentialValuesByID{"password": []byte("hunter22")}, []string{"hunter22"}},
		{"public credential", connector.CredentialValuesByID{"host": []byte("db.example")}, nil},
		{"too short", connector.CredentialValuesByID{"pin": []byte("123")}, nil},
		{"password in a url", connector.CredentialValuesByID{"url": []byte("redis://admin:UrlSecretPW@cache:6379/0")}, []string{"UrlSecretPW"}},
		{"url without password", connector.CredentialValuesByID{"url": []byte("https://api.example/v1")}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Secrets(tc.creds)
			if len(got) != len(tc.want) {
				t.Fatalf("secrets %q, want %q", got, tc.want)
			}
			for i := range got {
				if string(got[i]) != tc.want[i] {
					t.Fatalf("secrets %q, want %q", got, tc.want)
				}
			}
		})
	}
}

// formatterErr prints something other than its Error text, as a
// connector's error type may.
type formatterErr struct{ secret string }

func (e formatterErr) Error() string                 { return "fmt error" }
func (e formatterErr) Format(f fmt.State, verb rune) { fmt.Fprintf(f, "FORMATTER %s", e.secret) }
func (e formatterErr) GoString() string              { return "GOSTRING " + e.secret }

// TestError: the result shows err's text, redacted, with every verb and
// when wrapped; a clean error still unwraps to itself for errors.Is.
func TestError(t *testing.T) {
	const pw = "hunter22"
	creds := connector.CredentialValuesByID{"password": []byte(pw)}
	clean := errors.New("dial tcp: connection refused")
	tests := []struct {
		name    string
		err     error
		want    string
		unwraps bool
	}{
		{"clean", clean, "dial tcp: connection refused", true},
		{"holds the secret", errors.New("bad " + pw), "bad " + Mark, false},
		{"formats differently", formatterErr{pw}, "fmt error", true},
		// fmt.Errorf formats the inner error with its Format: that text is what is checked.
		{"formats differently, wrapped", fmt.Errorf("outer: %w", formatterErr{pw}), "outer: FORMATTER " + Mark, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Error(tc.err, creds)
			for _, shown := range []string{got.Error(), fmt.Sprintf("%v", got), fmt.Sprintf("%+v", got),
				fmt.Sprintf("%#v", got), fmt.Sprintf("%s", got), fmt.Errorf("connector: %w", got).Error()} {
				if strings.Contains(shown, pw) {
					t.Errorf("shown as %q", shown)
				}
			}
			if got.Error() != tc.want {
				t.Errorf("Error() = %q, want %q", got.Error(), tc.want)
			}
			if errors.Is(got, tc.err) != tc.unwraps {
				t.Errorf("errors.Is(result, err) = %v, want %v", !tc.unwraps, tc.unwraps)
			}
		})
	}
}

func TestLive(t *testing.T) {
	var l Live
	creds := connector.CredentialValuesByID{"password": []byte("hunter22")}
	remove := l.Add(creds)
	if got := l.String("pw hunter22"); got != "pw "+Mark {
		t.Errorf("live: %q", got)
	}
	remove()
	creds.Zero()
	if got := l.String("pw hunter22"); got != "pw hunter22" {
		t.Errorf("after remove: %q", got)
	}
	var none *Live
	if got := none.String("x"); got != "x" {
		t.Errorf("nil Live: %q", got)
	}
	none.Add(creds)()
}

// TestURLEscapedForms: a secret with characters a URL must escape is found
// as a query or a path carries it.
func TestURLEscapedForms(t *testing.T) {
	const secret = "s3cr3t+/= &x"
	creds := connector.CredentialValuesByID{"token": []byte(secret)}
	for _, text := range []string{
		"Location: /x?a=1&key=" + url.QueryEscape(secret),
		"GET /p/" + url.PathEscape(secret) + " HTTP/1.1",
	} {
		got := String(text, Secrets(creds))
		if got == text || strings.Contains(got, url.QueryEscape(secret)) || strings.Contains(got, url.PathEscape(secret)) {
			t.Errorf("%q redacted as %q", text, got)
		}
	}
}

// TestFormsZero: a Forms computed once redacts many texts, and Zero clears
// every form it holds (they are derived from the secret).
func TestFormsZero(t *testing.T) {
	fs := NewForms([][]byte{[]byte("hunter22-Secret")})
	if got := fs.String("a hunter22-Secret b"); got != "a "+Mark+" b" {
		t.Fatalf("String = %q", got)
	}
	held := fs.f
	fs.Zero()
	for _, f := range held {
		for _, c := range f {
			if c != 0 {
				t.Fatalf("form %q not cleared", f)
			}
		}
	}
	if got := fs.String("hunter22-Secret"); got != "hunter22-Secret" {
		t.Errorf("after Zero: %q", got)
	}
}

// TestBasicCredentialAnyAlignment: a password inside an HTTP Basic
// credential is redacted whole, whatever the length of the user name
// before it (which decides how its ends share base64 groups with its
// neighbours) and however short the password.
func TestBasicCredentialAnyAlignment(t *testing.T) {
	for _, pw := range []string{"Pw12", "hunter2", "S3cretPw!", "a-longer-secret-value"} {
		for _, user := range []string{"", "a", "ab", "abc", "abcd", "abcde"} {
			t.Run(user+":"+pw, func(t *testing.T) {
				for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
					text := "Authorization: Basic " + enc.EncodeToString([]byte(user+":"+pw)) + ", next"
					got := String(text, [][]byte{[]byte(pw)})
					if got != "Authorization: Basic "+Mark+", next" {
						t.Errorf("%q redacted to %q", text, got)
					}
				}
			})
		}
	}
	t.Run("other base64 stays", func(t *testing.T) {
		text := "etag " + base64.StdEncoding.EncodeToString([]byte("no secret here at all"))
		if got := String(text, [][]byte{[]byte("hunter2")}); got != text {
			t.Errorf("%q became %q", text, got)
		}
	})
}

// TestBase64RunsInURLs: a Basic credential echoed inside a URL is redacted
// whole however it is glued to the text before it and escaped: after
// "Basic+" (a query-escaped space) or a path's "/", with %2B, %2F and %3D
// for + / and =, and encoded twice.
func TestBase64RunsInURLs(t *testing.T) {
	for _, pw := range []string{"s3cr3t>>>??Zq", "hunt3r2", "a-longer-secret-value"} {
		basic := base64.StdEncoding.EncodeToString([]byte("ci-bot:" + pw))
		cases := map[string]string{
			"query escaped":    "login?auth=" + url.QueryEscape("Basic "+basic),
			"path escaped":     "Basic%20" + url.PathEscape(basic),
			"percent alphabet": strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(basic),
			"after a slash":    "cb/" + basic,
			"encoded twice":    "state=" + base64.StdEncoding.EncodeToString([]byte("Basic "+basic)),
		}
		for name, text := range cases {
			t.Run(pw+"/"+name, func(t *testing.T) {
				got := String(text, [][]byte{[]byte(pw)})
				if !strings.Contains(got, Mark) {
					t.Fatalf("%q not redacted: %q", text, got)
				}
				// What is left must not decode to any part of the credential.
				for _, run := range regexp.MustCompile(`[A-Za-z0-9+/=]{4,}`).FindAllString(strings.ReplaceAll(got, Mark, " "), -1) {
					if dec, err := base64.StdEncoding.DecodeString(run); err == nil && strings.Contains(string(dec), pw[:3]) {
						t.Errorf("%q left %q, which decodes to %q", text, run, dec)
					}
				}
			})
		}
	}
}

// TestGluedPrefixKept: a URL's host and an escaped "Basic " glued to a
// revealing base64 run stay readable; the rest of the run goes.
func TestGluedPrefixKept(t *testing.T) {
	basic := base64.StdEncoding.EncodeToString([]byte("ci-bot:hunt3r2"))
	for text, want := range map[string]string{
		"Location: http://x/" + basic: "Location: http://x/" + Mark,
		"auth=Basic+" + basic:         "auth=Basic+" + Mark,
		"Basic " + basic:              "Basic " + Mark,
	} {
		if got := String(text, [][]byte{[]byte("hunt3r2")}); got != want {
			t.Errorf("%q redacted to %q, want %q", text, got, want)
		}
	}
}
