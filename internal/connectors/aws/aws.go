// Package aws is the built-in aws HTTP connector: it signs requests with AWS
// Signature Version 4, for AWS APIs and S3-compatible endpoints, using the
// signer of the AWS SDK for Go v2.
//
// The client signs its requests itself with any (dummy) keys, as AWS SDKs
// and CLIs do anyway; the connector reads the region and service from the
// client's credential scope and re-signs the request with the real keys,
// keeping exactly the set of headers the client signed (plus x-amz-date, and
// x-amz-security-token when a session token is configured; a dummy
// x-amz-security-token is removed when none is). The signature is computed
// over what goes on the wire: the target Host (after forceSSL), the path and
// query as they will be sent, and the payload hash the client declared in
// x-amz-content-sha256 (S3 always sends it, including UNSIGNED-PAYLOAD and
// STREAMING-UNSIGNED-PAYLOAD-TRAILER). When the client sent no such header,
// the body is read (up to MaxHashedBody) to hash it, and replayed.
//
// Credentials: accessKeyId and secretAccessKey (required), accessToken
// (optional session token). No config keys of its own.
//
// Not supported (a 400 tells the client): unsigned requests, presigned URLs
// (X-Amz-Signature in the query), and chunk-signed streaming uploads
// (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), whose chunk signatures chain on the
// client's signature; configure the client for unsigned or whole-payload
// hashing instead.
package aws

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/budget"
	"github.com/secretless-broker/secretless-broker/internal/connkeys"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/secretless-broker/secretless-broker/sdk/connector"
	sdkhttp "github.com/secretless-broker/secretless-broker/sdk/connector/http"
)

// ID is the connector id services name in "connector:".
const ID = "aws"

// Description is a one-line summary for listings.
const Description = "re-signs AWS Signature Version 4 requests with the accessKeyId, secretAccessKey and accessToken credentials"

// MaxHashedBody bounds the body read to compute a payload hash when the
// client did not declare one in x-amz-content-sha256.
const MaxHashedBody = 16 << 20

const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// Plugin returns the connector factory.
func Plugin() sdkhttp.Plugin { return plugin{} }

type plugin struct{}

func (plugin) NewConnector(connector.Resources) sdkhttp.Connector {
	return &awsConnector{now: time.Now}
}

// ValidateConfig accepts only an empty block.
func (plugin) ValidateConfig(config []byte) error {
	return connkeys.Unknown(config, "aws", nil)
}

type awsConnector struct {
	now func() time.Time
}

// requestError is a problem with the client's request: the client gets a
// 400 with its text, which never holds a credential.
type requestError struct {
	msg    string
	status int // 0: 400
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) HTTPStatus() int {
	if e.status == 0 {
		return http.StatusBadRequest
	}
	return e.status
}

func badRequest(format string, args ...any) error {
	return &requestError{msg: "aws: " + fmt.Sprintf(format, args...)}
}

// MaxHashedInFlight bounds the memory all requests being hashed at once may
// hold, counted as their bytes arrive: past it a request gets 503, so that
// clients sending large unsigned bodies cannot exhaust the broker's memory
// (and a client that trickles its body holds only what it sent).
const MaxHashedInFlight = 4 * MaxHashedBody

var hashing = &budget.Budget{Limit: MaxHashedInFlight}

// scope is what the client's Authorization header says about its signature.
type scope struct {
	region, service string
	signedHeaders   []string // lowercase, as listed
}

// parseAuthorization reads "AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/
// SERVICE/aws4_request, SignedHeaders=a;b, Signature=HEX".
func parseAuthorization(h string) (scope, error) {
	var sc scope
	alg, rest, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || alg != "AWS4-HMAC-SHA256" {
		return sc, badRequest("the request is not signed with AWS4-HMAC-SHA256; sign it with any (dummy) keys so the proxy can re-sign it")
	}
	var cred, signed string
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			signed = v
		}
	}
	fields := strings.Split(cred, "/")
	if len(fields) != 5 || fields[4] != "aws4_request" || fields[2] == "" || fields[3] == "" {
		return sc, badRequest("cannot read region and service from the Authorization header's Credential scope")
	}
	if signed == "" {
		return sc, badRequest("the Authorization header lists no SignedHeaders")
	}
	sc.region, sc.service = fields[2], fields[3]
	sc.signedHeaders = strings.Split(strings.ToLower(signed), ";")
	return sc, nil
}

// Connect re-signs r with the real keys.
func (a *awsConnector) Connect(r *http.Request, creds connector.CredentialValuesByID) error {
	akid, secret, token := creds["accessKeyId"], creds["secretAccessKey"], creds["accessToken"]
	if len(akid) == 0 {
		return errors.New("aws: credential accessKeyId is missing")
	}
	if len(secret) == 0 {
		return errors.New("aws: credential secretAccessKey is missing")
	}
	for _, k := range []struct {
		name string
		v    []byte
	}{{"accessKeyId", akid}, {"secretAccessKey", secret}, {"accessToken", token}} {
		if err := checkKey(k.name, k.v); err != nil {
			return fmt.Errorf("aws: %w", err)
		}
	}
	if r.URL.Query().Has("X-Amz-Signature") {
		return badRequest("presigned URLs are not supported; send the request signed in the Authorization header")
	}
	auth := r.Header.Values("Authorization")
	if len(auth) != 1 {
		return badRequest("the request must carry exactly one AWS4-HMAC-SHA256 Authorization header (it has %d); sign it with any (dummy) keys", len(auth))
	}
	sc, err := parseAuthorization(auth[0])
	if err != nil {
		return err
	}
	payloadHash := r.Header.Get("X-Amz-Content-Sha256")
	switch {
	case strings.HasPrefix(payloadHash, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), strings.HasPrefix(payloadHash, "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"):
		return badRequest("chunk-signed streaming uploads (%s) cannot be re-signed; use UNSIGNED-PAYLOAD or a whole-payload hash", payloadHash)
	case payloadHash == "":
		if payloadHash, err = hashBody(r); err != nil {
			return err
		}
	}

	// Sign a copy that carries only the headers the client signed, so the
	// SDK signer (which signs every header it is given) produces exactly
	// the client's set.
	signed := make(map[string]bool, len(sc.signedHeaders))
	for _, h := range sc.signedHeaders {
		signed[h] = true
	}
	sreq := &http.Request{Method: r.Method, URL: r.URL, Host: r.Host, Header: make(http.Header, len(sc.signedHeaders)+2)}
	for k, v := range r.Header {
		lk := strings.ToLower(k)
		if !signed[lk] || lk == "host" || lk == "content-length" || lk == "authorization" || lk == "x-amz-date" {
			continue
		}
		if lk == "x-amz-security-token" {
			continue // set by the signer from accessToken, or removed
		}
		sreq.Header[k] = v
	}
	if signed["content-length"] {
		sreq.ContentLength = r.ContentLength
	}
	cr := awssdk.Credentials{AccessKeyID: string(akid), SecretAccessKey: string(secret), SessionToken: string(token)}
	// A new signer per request: the SDK signer caches derived signing keys
	// by access key id alone, so a shared one would keep signing with a
	// rotated-out secret, and would keep key material beyond the request.
	s3 := sc.service == "s3" || sc.service == "s3-object-lambda" || sc.service == "s3express"
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = s3 })
	if err := signer.SignHTTP(context.Background(), cr, sreq, payloadHash, sc.service, sc.region, a.now()); err != nil {
		return fmt.Errorf("aws: sign: %w", err)
	}
	r.Header.Del("X-Amz-Security-Token")
	for _, k := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
		if v, ok := sreq.Header[k]; ok {
			r.Header[k] = v
		}
	}
	if r.Header.Get("X-Amz-Content-Sha256") == "" && signed["x-amz-content-sha256"] {
		r.Header.Set("X-Amz-Content-Sha256", payloadHash)
	}
	return nil
}

// hashBody computes the payload hash of a body the client did not declare
// one for, reading at most MaxHashedBody bytes and replaying them.
func hashBody(r *http.Request) (string, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return emptySHA256, nil
	}
	if r.ContentLength > MaxHashedBody {
		return "", badRequest("body of %d bytes is too large to hash; send x-amz-content-sha256", r.ContentLength)
	}
	body, release, err := hashing.ReadAll(r.Body, MaxHashedBody)
	defer release()
	switch {
	case errors.Is(err, budget.ErrBusy):
		return "", &requestError{status: http.StatusServiceUnavailable,
			msg: "aws: too many request bodies are being hashed at once; retry, or send x-amz-content-sha256"}
	case errors.Is(err, budget.ErrTooLarge):
		return "", badRequest("body larger than %d bytes is too large to hash; send x-amz-content-sha256", MaxHashedBody)
	case err != nil:
		// The client's side: it stopped sending, or went away.
		return "", badRequest("could not read the whole request body to hash it: %v", err)
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = nil
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:]), nil
}

var (
	_ sdkhttp.Plugin    = plugin{}
	_ sdkhttp.Validator = plugin{}
	_ sdkhttp.Connector = (*awsConnector)(nil)
)
