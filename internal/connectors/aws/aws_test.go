package aws

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// Keys, scope and time of the public AWS Signature Version 4 test suite.
const (
	suiteAKID   = "AKIDEXAMPLE"
	suiteSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	suiteToken  = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
	suiteScope  = "20150830/us-east-1/service/aws4_request"
)

var suiteTime = time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)

func newTestConnector(now time.Time) *awsConnector {
	c := Plugin().NewConnector(nil).(*awsConnector)
	c.now = func() time.Time { return now }
	return c
}

// clientAuth is what a client that signed with dummy keys sends.
func clientAuth(signed string) string {
	return "AWS4-HMAC-SHA256 Credential=AKIDDUMMY/" + suiteScope + ", SignedHeaders=" + signed + ", Signature=0000000000000000000000000000000000000000000000000000000000000000"
}

// TestSigV4SuiteVectors re-signs requests from the AWS SigV4 test suite
// that a client signed with dummy keys, and expects the suite's Authorization
// header for the real example keys.
func TestSigV4SuiteVectors(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		target  string // path and query as sent
		headers [][2]string
		signed  string
		token   bool
		wantSig string
	}{
		{name: "get-vanilla", method: "GET", target: "/", signed: "host;x-amz-date",
			wantSig: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
		{name: "get-vanilla-query-order-key-case", method: "GET", target: "/?Param2=value2&Param1=value1", signed: "host;x-amz-date",
			wantSig: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
		{name: "get-vanilla-query-order-key", method: "GET", target: "/?Param1=value2&Param1=Value1", signed: "host;x-amz-date",
			wantSig: "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1"},
		{name: "get-header-value-order", method: "GET", target: "/", signed: "host;my-header1;x-amz-date",
			headers: [][2]string{{"My-Header1", "value4"}, {"My-Header1", "value1"}, {"My-Header1", "value3"}, {"My-Header1", "value2"}},
			wantSig: "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"},
		{name: "get-header-key-duplicate", method: "GET", target: "/", signed: "host;my-header1;x-amz-date",
			headers: [][2]string{{"My-Header1", "value2"}, {"My-Header1", "value2"}, {"My-Header1", "value1"}},
			wantSig: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"},
		{name: "post-vanilla", method: "POST", target: "/", signed: "host;x-amz-date",
			wantSig: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
		{name: "post-vanilla-query", method: "POST", target: "/?Param1=value1", signed: "host;x-amz-date",
			wantSig: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"},
		{name: "post-sts-header-before", method: "POST", target: "/", signed: "host;x-amz-date;x-amz-security-token", token: true,
			headers: [][2]string{{"X-Amz-Security-Token", "dummy-client-token"}},
			wantSig: "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"},
		{name: "normalize-path-relative-relative", method: "GET", target: "/", signed: "host;x-amz-date",
			wantSig: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.NewRequest(tt.method, "https://example.amazonaws.com"+tt.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("X-Amz-Date", "20150830T000000Z") // the client's own (stale) date
			for _, h := range tt.headers {
				r.Header.Add(h[0], h[1])
			}
			r.Header.Set("Authorization", clientAuth(tt.signed))
			r.Header.Set("User-Agent", "test-client") // not signed
			creds := connector.CredentialValuesByID{"accessKeyId": []byte(suiteAKID), "secretAccessKey": []byte(suiteSecret)}
			if tt.token {
				creds["accessToken"] = []byte(suiteToken)
			}
			if err := newTestConnector(suiteTime).Connect(r, creds); err != nil {
				t.Fatal(err)
			}
			want := "AWS4-HMAC-SHA256 Credential=" + suiteAKID + "/" + suiteScope + ", SignedHeaders=" + tt.signed + ", Signature=" + tt.wantSig
			if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != want {
				t.Errorf("Authorization =\n %q\nwant\n %q", got, want)
			}
			if got := r.Header.Get("X-Amz-Date"); got != "20150830T123600Z" {
				t.Errorf("X-Amz-Date = %q", got)
			}
			if tt.token && r.Header.Get("X-Amz-Security-Token") != suiteToken {
				t.Errorf("session token not set")
			}
		})
	}
}

func TestSignedHeaderSetKept(t *testing.T) {
	tests := []struct {
		name       string
		signed     string
		extra      map[string]string
		token      string
		wantSigned string
		wantNoTok  bool
	}{
		{name: "unsigned headers stay unsigned", signed: "host;x-amz-content-sha256;x-amz-date",
			extra:      map[string]string{"X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD", "Content-Type": "text/plain", "X-Amz-Meta-Unsigned": "1"},
			wantSigned: "host;x-amz-content-sha256;x-amz-date"},
		{name: "content-type signed when the client signed it", signed: "content-type;host;x-amz-content-sha256;x-amz-date",
			extra:      map[string]string{"X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD", "Content-Type": "text/plain"},
			wantSigned: "content-type;host;x-amz-content-sha256;x-amz-date"},
		{name: "dummy session token dropped", signed: "host;x-amz-date;x-amz-security-token",
			extra:      map[string]string{"X-Amz-Security-Token": "dummy"},
			wantSigned: "host;x-amz-date", wantNoTok: true},
		{name: "real session token added", signed: "host;x-amz-date", token: "real-token",
			wantSigned: "host;x-amz-date;x-amz-security-token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodPut, "http://127.0.0.1:7070/bucket/key", strings.NewReader("abc"))
			for k, v := range tt.extra {
				r.Header.Set(k, v)
			}
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDDUMMY/20240101/eu-west-1/s3/aws4_request, SignedHeaders="+tt.signed+", Signature=00")
			creds := connector.CredentialValuesByID{"accessKeyId": []byte("AKIDREAL"), "secretAccessKey": []byte("real-secret")}
			if tt.token != "" {
				creds["accessToken"] = []byte(tt.token)
			}
			if err := newTestConnector(time.Now()).Connect(r, creds); err != nil {
				t.Fatal(err)
			}
			auth := r.Header.Get("Authorization")
			if !strings.Contains(auth, "SignedHeaders="+tt.wantSigned+",") || !strings.Contains(auth, "Credential=AKIDREAL/") || !strings.Contains(auth, "/eu-west-1/s3/aws4_request") {
				t.Errorf("Authorization %q, want SignedHeaders=%s", auth, tt.wantSigned)
			}
			if tt.wantNoTok && r.Header.Get("X-Amz-Security-Token") != "" {
				t.Errorf("dummy token still sent")
			}
			if strings.Contains(auth, "real-secret") {
				t.Errorf("secret in header")
			}
		})
	}
}

func TestRequestsThatCannotBeSigned(t *testing.T) {
	creds := func() connector.CredentialValuesByID {
		return connector.CredentialValuesByID{"accessKeyId": []byte("AKIDREAL"), "secretAccessKey": []byte("real-secret")}
	}
	tests := []struct {
		name    string
		prepare func(r *http.Request)
		creds   connector.CredentialValuesByID
		wantErr string
		want400 bool
	}{
		{name: "unsigned", prepare: func(*http.Request) {}, wantErr: "exactly one AWS4-HMAC-SHA256 Authorization header", want400: true},
		{name: "other scheme", prepare: func(r *http.Request) { r.Header.Set("Authorization", "Bearer x") }, wantErr: "not signed with AWS4-HMAC-SHA256", want400: true},
		{name: "bad scope", prepare: func(r *http.Request) {
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKID/20240101/s3, SignedHeaders=host, Signature=00")
		}, wantErr: "cannot read region and service", want400: true},
		{name: "presigned", prepare: func(r *http.Request) {
			r.URL.RawQuery = "X-Amz-Signature=abc"
			r.Header.Set("Authorization", clientAuth("host;x-amz-date"))
		}, wantErr: "presigned URLs are not supported", want400: true},
		{name: "chunk-signed streaming", prepare: func(r *http.Request) {
			r.Header.Set("X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
			r.Header.Set("Authorization", clientAuth("host;x-amz-content-sha256;x-amz-date"))
		}, wantErr: "chunk-signed streaming uploads", want400: true},
		{name: "missing secret", prepare: func(r *http.Request) { r.Header.Set("Authorization", clientAuth("host;x-amz-date")) },
			creds: connector.CredentialValuesByID{"accessKeyId": []byte("AKIDREAL")}, wantErr: "credential secretAccessKey is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "http://example.amazonaws.com/", nil)
			tt.prepare(r)
			c := tt.creds
			if c == nil {
				c = creds()
			}
			err := newTestConnector(time.Now()).Connect(r, c)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			var sc interface{ HTTPStatus() int }
			if got := asStatus(err, &sc); got != tt.want400 {
				t.Errorf("400 = %v, want %v", got, tt.want400)
			}
			if strings.Contains(err.Error(), "real-secret") {
				t.Errorf("secret in error")
			}
		})
	}
}

func asStatus(err error, sc *interface{ HTTPStatus() int }) bool {
	re, ok := err.(*requestError)
	if ok {
		*sc = re
	}
	return ok && re.HTTPStatus() == http.StatusBadRequest
}

func TestBodyHashedWhenUndeclared(t *testing.T) {
	body := []byte(`{"Action":"ListUsers"}`)
	r, _ := http.NewRequest(http.MethodPost, "https://iam.amazonaws.com/", bytes.NewReader(body))
	r.Header.Set("Authorization", clientAuth("host;x-amz-date"))
	if err := newTestConnector(time.Now()).Connect(r, connector.CredentialValuesByID{"accessKeyId": []byte("A"), "secretAccessKey": []byte("S")}); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r.Body)
	if !bytes.Equal(got, body) {
		t.Fatalf("body not replayed: %q", got)
	}
}

func TestValidateConfig(t *testing.T) {
	p := Plugin().(interface{ ValidateConfig([]byte) error })
	if err := p.ValidateConfig(nil); err != nil {
		t.Errorf("empty: %v", err)
	}
	if err := p.ValidateConfig([]byte("region: x\n")); err == nil {
		t.Errorf("unknown key accepted")
	}
}

// TestSecretRotatedUnderSameKeyID guards against signing-key caches keyed by
// access key id: a rotated secret must change the signature at once.
func TestSecretRotatedUnderSameKeyID(t *testing.T) {
	c := newTestConnector(suiteTime)
	sign := func(secret string) string {
		r, _ := http.NewRequest(http.MethodGet, "https://example.amazonaws.com/", nil)
		r.Header.Set("Authorization", clientAuth("host;x-amz-date"))
		if err := c.Connect(r, connector.CredentialValuesByID{"accessKeyId": []byte(suiteAKID), "secretAccessKey": []byte(secret)}); err != nil {
			t.Fatal(err)
		}
		return r.Header.Get("Authorization")
	}
	first, second := sign(suiteSecret), sign("rotated-secret")
	if first == second {
		t.Fatal("signature unchanged after the secret rotated")
	}
	if !strings.HasSuffix(first, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31") {
		t.Fatalf("first signature %q", first)
	}
}

// errReader yields some bytes, then fails as a client that went away.
type errReader struct{ sent bool }

func (e *errReader) Read(p []byte) (int, error) {
	if !e.sent {
		e.sent = true
		return copy(p, "partial"), nil
	}
	return 0, io.ErrUnexpectedEOF
}

func TestHashedBodyLimits(t *testing.T) {
	creds := func() connector.CredentialValuesByID {
		return connector.CredentialValuesByID{"accessKeyId": []byte("A"), "secretAccessKey": []byte("S")}
	}
	tests := []struct {
		name       string
		body       io.Reader
		length     int64
		hold       int64 // in-flight budget taken by other requests
		wantStatus int
		wantErr    string
	}{
		{"client stops sending", &errReader{}, -1, 0, http.StatusBadRequest, "could not read the whole request body"},
		{"budget taken", strings.NewReader("xy"), -1, MaxHashedInFlight - 1, http.StatusServiceUnavailable, "too many request bodies"},
		{"budget nearly taken, the body fits", strings.NewReader("xyz"), 3, MaxHashedInFlight - 3, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.hold > 0 {
				_, release, err := hashing.ReadAll(strings.NewReader(strings.Repeat("x", int(tc.hold))), tc.hold)
				if err != nil {
					t.Fatal(err)
				}
				defer release()
			}
			r, _ := http.NewRequest(http.MethodPut, "https://s3.amazonaws.com/b/k", tc.body)
			r.ContentLength = tc.length
			r.Header.Set("Authorization", clientAuth("host;x-amz-date"))
			err := newTestConnector(time.Now()).Connect(r, creds())
			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var re *requestError
			if !errors.As(err, &re) || re.HTTPStatus() != tc.wantStatus || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %d %q", err, tc.wantStatus, tc.wantErr)
			}
		})
	}
	if n := hashing.Used(); n != 0 {
		t.Errorf("%d bytes of the budget were not given back", n)
	}
}
