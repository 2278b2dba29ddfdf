package pg

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestRefuseTellsClient drives Refuse with a real client (pgx): the client
// reports SQLSTATE 53300, with and without asking for TLS first.
func TestRefuseTellsClient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := Plugin().NewConnector(fakeResources{log: &testLogger{}}).(*pgConnector)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				c.Refuse(conn, "too many connections for this service")
			}()
		}
	}()
	for _, mode := range []string{"disable", "prefer"} {
		t.Run("sslmode "+mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := pgx.Connect(ctx, "postgres://u@"+l.Addr().String()+"/db?sslmode="+mode)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "53300" || pgErr.Severity != "FATAL" {
				t.Fatalf("err = %v, want FATAL 53300", err)
			}
		})
	}
}
