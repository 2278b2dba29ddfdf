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

// startTarget runs a line-protocol server that wants "TOKEN <token>" as its
// first line, answers "OK", and then echoes every line back upper-cased.
func startTarget(t *testing.T, token string) string {
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
				if line, err := r.ReadString('\n'); err != nil || line != "TOKEN "+token+"\n" {
					fmt.Fprint(c, "ERR bad token\n")
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

func load(t *testing.T) *connectortest.TCP {
	t.Helper()
	k, err := connectortest.LoadTCP(t, GetTCPPlugin(), connectortest.Options{Info: PluginInfo()})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func clientLine(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return line
}

func TestConnect(t *testing.T) {
	const token = "tok-0123456789"
	addr := startTarget(t, token)
	closed := func() string { l, _ := net.Listen("tcp", "127.0.0.1:0"); a := l.Addr().String(); l.Close(); return a }()

	tests := []struct {
		name       string
		creds      connectortest.Credentials
		wantErr    string // "" means the login must succeed
		wantClient string // what the application reads first
	}{
		{name: "logs in and relays", creds: connectortest.Credentials{"address": addr, "token": token}, wantClient: "HELLO\n"},
		{name: "wrong token", creds: connectortest.Credentials{"address": addr, "token": "tok-wrong-000"},
			wantErr: `refused the token: "ERR bad token"`, wantClient: "ERR secretless: linetoken: " + addr + ` refused the token: "ERR bad token"` + "\n"},
		{name: "target down", creds: connectortest.Credentials{"address": closed, "token": token},
			wantErr: "cannot reach", wantClient: "ERR secretless: linetoken: cannot reach "},
		{name: "token with a line break", creds: connectortest.Credentials{"address": addr, "token": "tok\nQUIT"},
			wantErr: "line break", wantClient: "ERR secretless: linetoken: the token contains a space or line break\n"},
		{name: "missing token", creds: connectortest.Credentials{"address": addr}, wantErr: "are required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := load(t).Connect(t, tt.creds)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Connect: %v", err)
				}
				fmt.Fprint(client, "hello\n")
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Connect error = %v, want one containing %q", err, tt.wantErr)
			}
			if got := clientLine(t, client); !strings.HasPrefix(got, tt.wantClient) {
				t.Errorf("application read %q, want %q", got, tt.wantClient)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		opts    connectortest.Options
		wantErr string
	}{
		{name: "no config", opts: connectortest.Options{Declared: []string{"address", "token"}}},
		{name: "empty config", opts: connectortest.Options{Config: []byte("{}\n")}},
		{name: "config block", opts: connectortest.Options{Config: []byte("timeout: 5s\n")}, wantErr: "takes no config block"},
		{name: "token not declared", opts: connectortest.Options{Declared: []string{"address"}}, wantErr: "credential token is missing"},
		{name: "literal address not host:port", opts: connectortest.Options{Declared: []string{"token"}, Literal: connectortest.Credentials{"address": "db"}},
			wantErr: `credential address "db" is not host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.Info = PluginInfo()
			_, err := connectortest.LoadTCP(t, GetTCPPlugin(), opts)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("LoadTCP: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("LoadTCP error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
