package pg

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jdbcJar is where Debian's libpostgresql-jdbc-java puts the driver.
const jdbcJar = "/usr/share/java/postgresql.jar"

// TestJDBC drives the broker with the PostgreSQL JDBC driver (pgjdbc), a
// client that does not use libpq: its own startup parameters, extended
// protocol with server-side prepared statements, batches and cancel.
func TestJDBC(t *testing.T) {
	srv := needServer(t)
	javac, errC := exec.LookPath("javac")
	java, errJ := exec.LookPath("java")
	_, errJar := os.Stat(jdbcJar)
	if errC != nil || errJ != nil || errJar != nil {
		if os.Getenv("SECRETLESS_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("JDBC test needs javac, java and %s (apt-get install default-jdk-headless libpostgresql-jdbc-java)", jdbcJar)
		}
		t.Skip("no javac/java or pgjdbc")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, javac, "-d", dir, filepath.Join("testdata", "JDBCCheck.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	for _, tc := range []struct{ name, sslmode, cfg string }{
		{"plain", "prefer", ""},
		{"server pool", "disable", poolConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := newService(t, baseCreds(srv, roleSCRAM, "require"), tc.cfg)
			url := fmt.Sprintf("jdbc:postgresql://127.0.0.1:%d/%s", svc.port, testDB)
			for round := 0; round < 2; round++ {
				out, err := exec.CommandContext(ctx, java, "-cp", dir+string(os.PathListSeparator)+jdbcJar, "JDBCCheck", url, tc.sslmode).CombinedOutput()
				if err != nil || !strings.Contains(string(out), "ok") {
					t.Fatalf("round %d: %v\n%s\nbroker: %v", round, err, out, svc.lastError())
				}
				if !strings.Contains(string(out), "user="+roleSCRAM.name) {
					t.Fatalf("not logged in as the service's role:\n%s", out)
				}
			}
		})
	}
}
