package pg

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The integration tests share one throwaway PostgreSQL 15 server, started
// on first use and stopped by TestMain. Set PG_BIN to use other binaries.
// With SECRETLESS_REQUIRE_INTEGRATION=1 missing binaries fail the tests
// instead of skipping them.

// Roles of the test server. Each password is distinct and long enough for
// the "password never appears" checks.
type role struct {
	name, password string
}

var (
	roleSCRAM      = role{"scram_user", "scram-Secret-1x"}
	roleMD5        = role{"md5_user", "md5-Secret-2x"}           // stored md5, hba md5
	roleMD5SCRAM   = role{"md5_scram_user", "mdscram-Secret-3x"} // stored scram, hba md5: SCRAM
	rolePassword   = role{"pw_user", "pw-Secret-4x"}             // hba password
	rolePasswordM  = role{"pw_md5_user", "pwmd5-Secret-4y"}      // stored md5, hba password
	roleTrust      = role{"trust_user", ""}
	roleSSLOnly    = role{"ssl_only", "sslonly-Secret-5x"}     // hostssl only
	roleNoSSLOnly  = role{"nossl_only", "nossl-Secret-6x"}     // hostnossl only
	roleCert       = role{"cert_user", ""}                     // hba cert
	roleLimited    = role{"limited_user", "limited-Secret-7x"} // CONNECTION LIMIT 0
	roleRotate     = role{"rotate_user", "rotate-Secret-8x"}
	roleUnicode    = role{"unicode_user", "p\u00e4ssw\u00f6rd-S\u00e9cret"} // composed
	roleReplicator = role{"repl_user", "repl-Secret-9x"}
	roleMD5inSCRAM = role{"md5_in_scram", "md5scram-Secret-10"} // stored md5, hba scram: fails
	roleBackup     = role{"backup_user", "backup-Secret-11"}    // may start backups, set up replication origins
	// A ligature (NFKC changes it) beside a character unassigned in Unicode
	// 3.2: SASLprep then leaves the password as it is.
	roleUnicodeNew = role{"unicode_new_user", "\ufb01\U0001F600-Secret-12"} // emoji: Unicode 6.1
	roleUnicode40  = role{"unicode_40_user", "\ufb01\u0221-Secret-13"}      // U+0221: Unicode 4.0
	roleLimitOne   = role{"limit_one_user", "limitone-Secret-14"}           // CONNECTION LIMIT 1
	roleNamedPW    = role{"devuser", "devuser"}                             // CONNECTION LIMIT 0; password = name

	allRoles = []role{roleSCRAM, roleMD5, roleMD5SCRAM, rolePassword, rolePasswordM, roleTrust, roleSSLOnly,
		roleNoSSLOnly, roleCert, roleLimited, roleRotate, roleUnicode, roleReplicator, roleMD5inSCRAM, roleBackup,
		roleUnicodeNew, roleUnicode40, roleLimitOne, roleNamedPW}
)

const testDB = "appdb"

type pgServer struct {
	bin     string
	dir     string
	data    string
	sock    string
	port    int
	cmd     *exec.Cmd
	exited  chan struct{}
	pki     *testPKI
	cred    *syscall.Credential // nil when not root
	rootDSN string              // trust over the unix socket
}

var (
	serverOnce sync.Once
	server     *pgServer
	serverErr  error
	errNoPG    = errors.New("PostgreSQL binaries not found")
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if server != nil {
		server.stop()
	}
	os.Exit(code)
}

// needServer returns the shared server, starting it on first use.
func needServer(t testing.TB) *pgServer {
	t.Helper()
	if testing.Short() && os.Getenv("SECRETLESS_REQUIRE_INTEGRATION") != "1" {
		t.Skip("integration test: skipped with -short")
	}
	serverOnce.Do(func() { server, serverErr = startPGServer() })
	if serverErr != nil {
		if errors.Is(serverErr, errNoPG) && os.Getenv("SECRETLESS_REQUIRE_INTEGRATION") != "1" {
			t.Skipf("integration test: %v", serverErr)
		}
		t.Fatalf("starting PostgreSQL: %v", serverErr)
	}
	return server
}

func pgBinDir() (string, error) {
	if d := os.Getenv("PG_BIN"); d != "" { // only there when set
		if _, err := os.Stat(filepath.Join(d, "postgres")); err != nil {
			return "", fmt.Errorf("%w in PG_BIN=%s", errNoPG, d)
		}
		return d, nil
	}
	if d := "/usr/lib/postgresql/15/bin"; fileExists(filepath.Join(d, "postgres")) {
		return d, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w (looked in PG_BIN, /usr/lib/postgresql/15/bin, pg_config --bindir)", errNoPG)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startPGServer() (_ *pgServer, err error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	s := &pgServer{bin: bin, exited: make(chan struct{})}
	s.dir, err = os.MkdirTemp("", "pg-connector-test-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user: %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	s.data = filepath.Join(s.dir, "data")
	s.sock = filepath.Join(s.dir, "sock")
	if err := os.Mkdir(s.sock, 0o700); err != nil {
		return nil, err
	}
	if s.pki, err = newTestPKI(s.dir); err != nil {
		return nil, err
	}
	if uid >= 0 {
		if err := filepath.Walk(s.dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Chown(p, uid, gid)
		}); err != nil {
			return nil, err
		}
	}
	initdb := s.command("initdb", "-D", s.data, "-U", "postgres", "--auth-local=trust",
		"--auth-host=scram-sha-256", "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	hba := `local all all trust
host replication repl_user 127.0.0.1/32 scram-sha-256
host all trust_user 127.0.0.1/32 trust
host all pw_user 127.0.0.1/32 password
host all pw_md5_user 127.0.0.1/32 password
host all md5_user 127.0.0.1/32 md5
host all md5_scram_user 127.0.0.1/32 md5
hostssl all ssl_only 127.0.0.1/32 scram-sha-256
hostnossl all ssl_only 127.0.0.1/32 reject
hostnossl all nossl_only 127.0.0.1/32 scram-sha-256
hostssl all nossl_only 127.0.0.1/32 reject
hostssl all cert_user 127.0.0.1/32 cert
host all all 127.0.0.1/32 scram-sha-256
`
	if err := os.WriteFile(filepath.Join(s.data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return nil, err
	}
	if uid >= 0 {
		_ = os.Chown(filepath.Join(s.data, "pg_hba.conf"), uid, gid)
	}
	if s.port, err = freePort(); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(s.dir, "postgres.log"))
	if err != nil {
		return nil, err
	}
	s.cmd = s.command("postgres", "-D", s.data, "-p", strconv.Itoa(s.port), "-k", s.sock,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "ssl=on",
		"-c", "ssl_cert_file="+s.pki.serverCertFile,
		"-c", "ssl_key_file="+s.pki.serverKeyFile,
		"-c", "ssl_ca_file="+s.pki.caFile,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "synchronize_seqscans=off", "-c", "max_connections=80", "-c", "max_wal_size=2GB",
		"-c", "log_min_messages=warning")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr.Setpgid = true
	s.cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() { _ = s.cmd.Wait(); logf.Close(); close(s.exited) }()

	s.rootDSN = fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", s.sock, s.port)
	if err := s.waitReady(30 * time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
		return nil, fmt.Errorf("%w; server log:\n%s", err, log)
	}
	if err := s.setup(); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	return s, nil
}

func (s *pgServer) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	cmd.Dir = s.dir
	return cmd
}

func (s *pgServer) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.rootDSN)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("postgres exited during start-up")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after %s: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *pgServer) setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.rootDSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	md5Stored := map[string]bool{roleMD5.name: true, rolePasswordM.name: true, roleMD5inSCRAM.name: true}
	for _, r := range allRoles {
		enc := "scram-sha-256"
		if md5Stored[r.name] {
			enc = "md5"
		}
		sql := fmt.Sprintf("SET password_encryption = '%s'; CREATE ROLE %s LOGIN", enc, r.name)
		if r.password != "" {
			sql += " PASSWORD '" + r.password + "'"
		}
		switch r {
		case roleLimited, roleNamedPW:
			sql += " CONNECTION LIMIT 0"
		case roleLimitOne:
			sql += " CONNECTION LIMIT 1"
		case roleReplicator:
			sql += " REPLICATION"
		}
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	for _, q := range []string{
		"CREATE DATABASE " + testDB + " OWNER " + roleSCRAM.name,
		"CREATE DATABASE " + roleSCRAM.name + " OWNER " + roleSCRAM.name, // database defaults to the user name
		"GRANT pg_signal_backend TO " + roleSCRAM.name,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	// Function privileges are per database.
	app, err := pgx.Connect(ctx, strings.Replace(s.rootDSN, "dbname=postgres", "dbname="+testDB, 1))
	if err != nil {
		return err
	}
	defer app.Close(ctx)
	q := "GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean), pg_backup_stop(boolean), " +
		"pg_replication_origin_create(text), pg_replication_origin_session_setup(text), " +
		"pg_replication_origin_session_is_setup() TO " + roleBackup.name
	if _, err := app.Exec(ctx, q); err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	return nil
}

func (s *pgServer) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
		}
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// exec runs SQL as the superuser over the unix socket.
func (s *pgServer) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.rootDSN)
	if err != nil {
		t.Fatalf("superuser connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("superuser %q: %v", sql, err)
	}
}

// queryRow runs a query as the superuser and scans one value.
func (s *pgServer) queryRow(t testing.TB, dst any, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.rootDSN)
	if err != nil {
		t.Fatalf("superuser connect: %v", err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sql, args...).Scan(dst); err != nil {
		t.Fatalf("superuser %q: %v", sql, err)
	}
}

// testPKI is a CA with a server certificate for "localhost" only (no IP
// SAN, so that verify-full against 127.0.0.1 fails), a client certificate
// for cert_user, and an unrelated CA.
type testPKI struct {
	caKey                       *ecdsa.PrivateKey // to issue more certificates
	caCert                      *x509.Certificate
	caPEM, otherCAPEM           []byte
	caFile                      string
	serverCertFile              string
	serverKeyFile               string
	serverCertPEM, serverKeyPEM []byte
	clientCertPEM, clientKeyPEM []byte
	clientCertFile              string
	clientKeyFile               string
}

func newTestPKI(dir string) (*testPKI, error) {
	p := &testPKI{}
	caKey, caCert, caPEM, err := newCA("pg-connector test CA")
	if err != nil {
		return nil, err
	}
	p.caPEM, p.caKey, p.caCert = caPEM, caKey, caCert
	if _, _, p.otherCAPEM, err = newCA("unrelated CA"); err != nil {
		return nil, err
	}
	if p.serverCertPEM, p.serverKeyPEM, err = newLeaf(caKey, caCert, "localhost", []string{"localhost"}, false); err != nil {
		return nil, err
	}
	if p.clientCertPEM, p.clientKeyPEM, err = newLeaf(caKey, caCert, roleCert.name, nil, true); err != nil {
		return nil, err
	}
	files := []struct {
		name string
		data []byte
		dst  *string
	}{
		{"ca.crt", p.caPEM, &p.caFile},
		{"server.crt", p.serverCertPEM, &p.serverCertFile},
		{"server.key", p.serverKeyPEM, &p.serverKeyFile},
		{"client.crt", p.clientCertPEM, &p.clientCertFile},
		{"client.key", p.clientKeyPEM, &p.clientKeyFile},
	}
	for _, f := range files {
		*f.dst = filepath.Join(dir, f.name)
		if err := os.WriteFile(*f.dst, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func newCA(cn string) (*ecdsa.PrivateKey, *x509.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	return key, cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func newLeaf(caKey *ecdsa.PrivateKey, ca *x509.Certificate, cn string, dns []string, client bool) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dns,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// clientTLSForBroker returns a tls.Config a Go client uses to verify the
// broker's client-facing certificate.
func (p *testPKI) clientTLSForBroker() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}
