package main

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk/connectortest"
)

// tokenTarget wants "TOKEN <token>", answers "OK" and echoes lines upper-cased.
func tokenTarget(t *testing.T, token string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				if line, _ := r.ReadString('\n'); line != "TOKEN "+token+"\n" {
					fmt.Fprint(c, "NO\n")
					return
				}
				fmt.Fprint(c, "OK\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprint(c, strings.ToUpper(line))
				}
			}()
		}
	}()
	return l.Addr().String()
}

// TestPortedConnector runs the ported plugin, unchanged but for its
// imports, through the test kit.
func TestPortedConnector(t *testing.T) {
	addr := tokenTarget(t, "tok-42-42-42")
	tests := []struct {
		name    string
		token   string
		wantErr string
	}{
		{name: "right token", token: "tok-42-42-42"},
		{name: "wrong token", token: "tok-00-00-00", wantErr: "refused the token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := connectortest.LoadTCP(t, GetTCPPlugin(), connectortest.Options{Info: PluginInfo()})
			if err != nil {
				t.Fatal(err)
			}
			client, err := k.Connect(t, connectortest.Credentials{"address": addr, "token": tt.token})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Connect error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprint(client, "ported\n")
			_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, _ := bufio.NewReader(client).ReadString('\n'); got != "PORTED\n" {
				t.Errorf("got %q, want PORTED", got)
			}
		})
	}
}
