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

// toolEnv is the libpq environment of a client tool pointed at the service.
// No PGPASSWORD: the broker never asks the client for one.
func toolEnv(svc *service, extra []string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.TempDir(),
		"PGHOST=127.0.0.1",
		fmt.Sprintf("PGPORT=%d", svc.port),
		"PGUSER=whoever",
		"PGDATABASE=" + testDB,
		"PGSSLMODE=disable",
		"PGCONNECT_TIMEOUT=5",
		"PGGSSENCMODE=disable",
	}
	return append(env, extra...) // later entries win
}

// runTool runs a PostgreSQL client program against the service.
func runTool(t testing.TB, srv *pgServer, svc *service, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(srv.bin, name), args...)
	cmd.Env = toolEnv(svc, env)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// runPsql runs one SQL command with psql and returns its unaligned,
// tuples-only output; it fails the test on error.
func runPsql(t testing.TB, srv *pgServer, svc *service, env []string, sql string) string {
	t.Helper()
	out, err := runTool(t, srv, svc, env, "psql", "-X", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql)
	if err != nil {
		t.Fatalf("psql %q: %v\n%s\n(broker: %v)", sql, err, out, svc.lastError())
	}
	return strings.TrimSpace(out)
}

// psqlFails runs psql expecting failure and returns its output.
func psqlFails(t testing.TB, srv *pgServer, svc *service, env []string, sql string) string {
	t.Helper()
	out, err := runTool(t, srv, svc, env, "psql", "-X", "-w", "-A", "-t", "-c", sql)
	if err == nil {
		t.Fatalf("psql %q succeeded, want failure:\n%s", sql, out)
	}
	return out
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
