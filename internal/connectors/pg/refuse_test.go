package pg

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
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
	var reason atomic.Value // tcp.RefuseReason; a client may connect twice (sslmode prefer)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				c.Refuse(conn, reason.Load().(tcp.RefuseReason))
			}()
		}
	}()
	tests := []struct {
		name, mode string
		reason     tcp.RefuseReason
		code       string
	}{
		{"limit, sslmode disable", "disable", tcp.RefuseTooManyConnections, "53300"},
		{"limit, sslmode prefer", "prefer", tcp.RefuseTooManyConnections, "53300"},
		{"credentials unavailable", "disable", tcp.RefuseCredentialsUnavailable, "08001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason.Store(tt.reason)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := pgx.Connect(ctx, "postgres://u@"+l.Addr().String()+"/db?sslmode="+tt.mode)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != tt.code || pgErr.Severity != "FATAL" {
				t.Fatalf("err = %v, want FATAL %s", err, tt.code)
			}
		})
	}
}
