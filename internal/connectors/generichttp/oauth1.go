package generichttp

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/budget"
)

// maxFormBody bounds the form body read to include its parameters in an
// OAuth 1.0a signature.
const maxFormBody = 1 << 20

// requestError is a fault in the client's request, not in the broker or
// its credentials: the client gets its status (400, 413) instead of a 500.
// Its text quotes only what the client sent.
// maxFormInFlight bounds the memory all form bodies being signed at once
// may hold, counted as their bytes arrive; past it a request gets 503.
const maxFormInFlight = 32 * maxFormBody

var formBudget = &budget.Budget{Limit: maxFormInFlight}

type requestError struct {
	status int
	err    error
}

func (e *requestError) Error() string   { return e.err.Error() }
func (e *requestError) Unwrap() error   { return e.err }
func (e *requestError) HTTPStatus() int { return e.status }

type oauth1Keys struct {
	consumerKey, consumerSecret, token, tokenSecret string
}

// oauth1Signer signs requests with OAuth 1.0a HMAC-SHA1 (RFC 5849 §3.4.2).
type oauth1Signer struct {
	now   func() time.Time
	nonce func() string
}

func newOAuth1Signer() *oauth1Signer {
	return &oauth1Signer{now: time.Now, nonce: func() string {
		var b [16]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}}
}

// percentEncode is RFC 5849 §3.6: everything but ALPHA, DIGIT, "-", ".",
// "_" and "~" is %XX with uppercase hex.
func percentEncode(s string) string {
	const hexdig = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexdig[c>>4])
		b.WriteByte(hexdig[c&15])
	}
	return b.String()
}

// baseURI is RFC 5849 §3.4.1.2: lowercase scheme and host, the port only
// when it is not the scheme's default, the path, no query.
func baseURI(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if p := u.Port(); p != "" && !(scheme == "http" && p == "80") && !(scheme == "https" && p == "443") {
		host += ":" + p
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path
}

// decodePairs splits an application/x-www-form-urlencoded string into
// decoded pairs, keeping duplicates and order.
func decodePairs(raw string) ([][2]string, error) {
	var out [][2]string
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		dk, err := url.QueryUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("bad parameter encoding: %w", err)
		}
		dv, err := url.QueryUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("bad parameter encoding: %w", err)
		}
		out = append(out, [2]string{dk, dv})
	}
	return out, nil
}

func isForm(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/x-www-form-urlencoded"
}

func (o *oauth1Signer) sign(r *http.Request, k oauth1Keys) error {
	if k.consumerKey == "" || k.consumerSecret == "" {
		return errors.New("consumer_key and consumer_secret must not be empty")
	}
	params, err := decodePairs(r.URL.RawQuery)
	if err != nil {
		return &requestError{status: http.StatusBadRequest, err: fmt.Errorf("query: %w", err)}
	}
	if isForm(r) && r.Body != nil && r.Body != http.NoBody {
		body, release, err := formBudget.ReadAll(r.Body, maxFormBody)
		defer release()
		switch {
		case errors.Is(err, budget.ErrBusy):
			return &requestError{status: http.StatusServiceUnavailable,
				err: errors.New("too many form bodies are being signed at once; retry")}
		case errors.Is(err, budget.ErrTooLarge):
			return &requestError{status: http.StatusRequestEntityTooLarge,
				err: fmt.Errorf("form body larger than %d bytes cannot be signed", maxFormBody)}
		case err != nil:
			return &requestError{status: http.StatusBadRequest, err: fmt.Errorf("read form body: %w", err)}
		}
		_ = r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.GetBody = nil
		fp, err := decodePairs(string(body))
		if err != nil {
			return &requestError{status: http.StatusBadRequest, err: fmt.Errorf("form body: %w", err)}
		}
		params = append(params, fp...)
	}
	oauth := [][2]string{
		{"oauth_consumer_key", k.consumerKey},
		{"oauth_nonce", o.nonce()},
		{"oauth_signature_method", "HMAC-SHA1"},
		{"oauth_timestamp", strconv.FormatInt(o.now().Unix(), 10)},
	}
	if k.token != "" {
		oauth = append(oauth, [2]string{"oauth_token", k.token})
	}
	oauth = append(oauth, [2]string{"oauth_version", "1.0"})
	// Client-sent oauth_* query parameters would be signed twice; drop them
	// from the signature base only if they collide with ours.
	all := make([][2]string, 0, len(params)+len(oauth))
	for _, p := range params {
		if p[0] == "oauth_signature" {
			continue
		}
		all = append(all, [2]string{percentEncode(p[0]), percentEncode(p[1])})
	}
	for _, p := range oauth {
		all = append(all, [2]string{percentEncode(p[0]), percentEncode(p[1])})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i][0] != all[j][0] {
			return all[i][0] < all[j][0]
		}
		return all[i][1] < all[j][1]
	})
	var norm strings.Builder
	for i, p := range all {
		if i > 0 {
			norm.WriteByte('&')
		}
		norm.WriteString(p[0])
		norm.WriteByte('=')
		norm.WriteString(p[1])
	}
	base := strings.ToUpper(r.Method) + "&" + percentEncode(baseURI(r.URL)) + "&" + percentEncode(norm.String())
	key := percentEncode(k.consumerSecret) + "&" + percentEncode(k.tokenSecret)
	mac := hmac.New(sha1.New, []byte(key))
	mac.Write([]byte(base))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))

	oauth = append(oauth, [2]string{"oauth_signature", sig})
	sort.Slice(oauth, func(i, j int) bool { return oauth[i][0] < oauth[j][0] })
	var h strings.Builder
	h.WriteString("OAuth ")
	for i, p := range oauth {
		if i > 0 {
			h.WriteString(", ")
		}
		h.WriteString(p[0])
		h.WriteString(`="`)
		h.WriteString(percentEncode(p[1]))
		h.WriteByte('"')
	}
	r.Header["Authorization"] = []string{h.String()}
	return nil
}
