package aws

// The AWS CLI-style flow against a real S3 server that verifies signatures:
// versitygw (built once per machine from the testservers/versitygw module,
// cached under $HOME/.cache/secretless-test) behind the broker's proxy, with
// an aws-sdk-go-v2 S3 client that only holds dummy keys.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/secretless-broker/secretless-broker/internal/httpproxy"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

const versitygwVersion = "v1.8.0"

var (
	vgwOnce sync.Once
	vgwPath string
	vgwErr  error
)

// versitygwBinary returns the cached versitygw binary, building it first
// when it is missing.
func versitygwBinary() (string, error) {
	vgwOnce.Do(func() {
		cache := os.Getenv("SECRETLESS_TEST_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				vgwErr = err
				return
			}
			cache = filepath.Join(home, ".cache", "secretless-test")
		}
		dir := filepath.Join(cache, "versitygw-"+versitygwVersion)
		vgwPath = filepath.Join(dir, "versitygw")
		if _, err := os.Stat(vgwPath); err == nil {
			return
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			vgwErr = err
			return
		}
		mod, err := filepath.Abs(filepath.Join("..", "..", "..", "testservers", "versitygw"))
		if err != nil {
			vgwErr = err
			return
		}
		tmp := vgwPath + fmt.Sprintf(".tmp%d", os.Getpid())
		cmd := exec.Command("go", "build", "-ldflags", "-s -w", "-o", tmp, "github.com/versity/versitygw/cmd/versitygw")
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			vgwErr = fmt.Errorf("build versitygw %s in %s: %v\n%s", versitygwVersion, mod, err, out)
			return
		}
		vgwErr = os.Rename(tmp, vgwPath)
	})
	return vgwPath, vgwErr
}

// startVersitygw runs versitygw with one account and returns its address.
func startVersitygw(t *testing.T, access, secret string, extra ...string) string {
	t.Helper()
	bin, err := versitygwBinary()
	if err != nil {
		if os.Getenv("SECRETLESS_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("versitygw is required (SECRETLESS_REQUIRE_INTEGRATION=1): %v", err)
		}
		t.Skipf("versitygw unavailable: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	data := t.TempDir()
	var logs bytes.Buffer
	args := append([]string{"--port", addr, "--access", access, "--secret", secret, "--quiet"}, extra...)
	cmd := exec.Command(bin, append(args, "posix", data)...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return addr
		}
		select {
		case <-exited:
			t.Fatalf("versitygw exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw not ready on %s: %s", addr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func s3Client(endpoint string, httpClient *http.Client, akid, secret string) *s3.Client {
	cfg := awssdk.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(akid, secret, ""),
		HTTPClient:  httpClient,
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = awssdk.String(endpoint)
		o.UsePathStyle = true
		o.RetryMaxAttempts = 1
	})
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestS3ThroughProxyAgainstVersitygw(t *testing.T) {
	const realAKID, realSecret = "AKIDREALTEST", "real-Secret-Key-0123456789"
	endpointAddr := startVersitygw(t, realAKID, realSecret)
	endpoint := "http://" + endpointAddr

	// The credential the proxy fetches on every request; tests rotate it.
	var current atomic.Value
	current.Store([2]string{realAKID, realSecret})
	fetch := func(context.Context) (connector.CredentialValuesByID, error) {
		kv := current.Load().([2]string)
		return connector.CredentialValuesByID{"accessKeyId": []byte(kv[0]), "secretAccessKey": []byte(kv[1])}, nil
	}
	cfg, rest, err := httpproxy.ParseConfig([]byte("authenticateURLsMatching: '^http://" + strings.ReplaceAll(endpointAddr, ".", `\.`) + "/'\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Plugin().(interface{ ValidateConfig([]byte) error }).ValidateConfig(rest); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	srv := httpproxy.New(l, []httpproxy.Route{cfg.Route("s3", Plugin().NewConnector(nil), fetch)},
		slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), httpproxy.Options{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	})
	viaProxy := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: l.Addr().String()})}}
	client := s3Client(endpoint, viaProxy, "AKIDDUMMY", "dummy-secret")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	big := make([]byte, 5<<20+123)
	_, _ = rand.Read(big)
	t.Run("dummy keys without the proxy are refused", func(t *testing.T) {
		direct := s3Client(endpoint, &http.Client{}, "AKIDDUMMY", "dummy-secret")
		_, err := direct.ListBuckets(ctx, &s3.ListBucketsInput{})
		if err == nil {
			t.Fatal("versitygw accepted dummy keys; the test would prove nothing")
		}
	})
	t.Run("create bucket, put and get objects", func(t *testing.T) {
		if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: awssdk.String("bkt")}); err != nil {
			t.Fatalf("CreateBucket: %v", err)
		}
		for _, obj := range []struct {
			key  string
			body []byte
		}{{"small.txt", []byte("hello through secretless")}, {"dir/with space+plus.bin", big}, {"empty", nil}} {
			if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: awssdk.String("bkt"), Key: awssdk.String(obj.key),
				Body: bytes.NewReader(obj.body), ContentType: awssdk.String("application/octet-stream")}); err != nil {
				t.Fatalf("PutObject %s: %v", obj.key, err)
			}
			out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: awssdk.String("bkt"), Key: awssdk.String(obj.key)})
			if err != nil {
				t.Fatalf("GetObject %s: %v", obj.key, err)
			}
			got, _ := io.ReadAll(out.Body)
			out.Body.Close()
			if !bytes.Equal(got, obj.body) {
				t.Fatalf("object %s: got %d bytes back, want %d", obj.key, len(got), len(obj.body))
			}
		}
		lb, err := client.ListBuckets(ctx, &s3.ListBucketsInput{})
		if err != nil || len(lb.Buckets) != 1 {
			t.Fatalf("ListBuckets: %v %v", lb, err)
		}
		lo, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: awssdk.String("bkt"), Prefix: awssdk.String("dir/")})
		if err != nil || len(lo.Contents) != 1 {
			t.Fatalf("ListObjectsV2: %v %v", lo, err)
		}
	})
	t.Run("wrong real key gets the server's 403", func(t *testing.T) {
		current.Store([2]string{realAKID, "WRONG-secret"})
		_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: awssdk.String("bkt"), Key: awssdk.String("x"), Body: strings.NewReader("x")})
		var re interface{ HTTPStatusCode() int }
		if err == nil || !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusForbidden || apiCode(err) != "SignatureDoesNotMatch" {
			t.Fatalf("err = %v (code %q), want 403 SignatureDoesNotMatch\n%s", err, apiCode(err), logs)
		}
	})
	t.Run("rotated credential takes effect on the next request", func(t *testing.T) {
		current.Store([2]string{realAKID, realSecret})
		if _, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: awssdk.String("bkt"), Key: awssdk.String("small.txt")}); err != nil {
			t.Fatalf("HeadObject after rotation back: %v", err)
		}
	})
	t.Run("log holds no secret", func(t *testing.T) {
		if s := logs.String(); strings.Contains(s, realSecret) || strings.Contains(s, "WRONG-secret") {
			t.Fatalf("secret in log:\n%s", s)
		}
	})
}

// pki writes a CA and a server certificate for 127.0.0.1 into dir.
func pki(t *testing.T, dir, name string) (caFile, caKeyFile, certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, typ string, b []byte) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKeyDER, _ := x509.MarshalECPrivateKey(caKey)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return write(name+"-ca.pem", "CERTIFICATE", caDER), write(name+"-ca-key.pem", "EC PRIVATE KEY", caKeyDER),
		write(name+"-cert.pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", keyDER), pool
}

// TestS3OverHTTPSWithInterception is the flow of clients that only speak
// HTTPS: the S3 client CONNECTs, the proxy terminates the tunnel with a
// certificate from the intercept CA, re-signs, and talks TLS to versitygw.
func TestS3OverHTTPSWithInterception(t *testing.T) {
	const realAKID, realSecret = "AKIDTLSTEST", "tls-Secret-Key-9876543210"
	dir := t.TempDir()
	vgwCA, _, vgwCert, vgwKey, _ := pki(t, dir, "vgw")
	icaFile, icaKey, _, _, icaPool := pki(t, dir, "intercept")
	addr := startVersitygw(t, realAKID, realSecret, "--cert", vgwCert, "--key", vgwKey)
	block := fmt.Sprintf("authenticateURLsMatching: '^https://%s/'\ncaBundle: %s\ninterceptConnect:\n  caCert: %s\n  caKey: %s\n",
		strings.ReplaceAll(addr, ".", `\.`), vgwCA, icaFile, icaKey)
	cfg, _, err := httpproxy.ParseConfig([]byte(block))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := httpproxy.ListenerOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(context.Context) (connector.CredentialValuesByID, error) {
		return connector.CredentialValuesByID{"accessKeyId": []byte(realAKID), "secretAccessKey": []byte(realSecret)}, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpproxy.New(l, []httpproxy.Route{cfg.Route("s3", Plugin().NewConnector(nil), fetch)}, nil, opts)
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	})
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: l.Addr().String()}),
		TLSClientConfig: &tls.Config{RootCAs: icaPool}}}
	client := s3Client("https://"+addr, hc, "AKIDDUMMY", "dummy-secret")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: awssdk.String("tlsbkt")}); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
	body := make([]byte, 3<<20)
	_, _ = rand.Read(body)
	if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: awssdk.String("tlsbkt"), Key: awssdk.String("obj"), Body: bytes.NewReader(body)}); err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: awssdk.String("tlsbkt"), Key: awssdk.String("obj")})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if !bytes.Equal(got, body) {
		t.Fatalf("got %d bytes back, want %d", len(got), len(body))
	}
}
