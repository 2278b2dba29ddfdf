package main

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/secretless-broker/secretless-broker/sdk/connectortest"
)

// fakeTarget stands in for the real server: it accepts "AUTH <password>"
// and then answers "PING" with "+PONG". TODO: replace it with a fake of
// your protocol, or start the real server (and skip when it is missing).
func fakeTarget(t *testing.T, password string) (host, port string) {
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
				if line, _ := r.ReadString('\n'); line != "AUTH "+password+"\r\n" {
					fmt.Fprint(c, "-WRONGPASS invalid password\r\n")
					return
				}
				fmt.Fprint(c, "+OK\r\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if strings.TrimSpace(line) == "PING" {
						fmt.Fprint(c, "+PONG\r\n")
					}
				}
			}()
		}
	}()
	host, port, _ = net.SplitHostPort(l.Addr().String())
	return host, port
}

func reply(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return line
}

func TestConnect(t *testing.T) {
	host, port := fakeTarget(t, "s3cret-pass")
	unused := func() string {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		defer l.Close()
		return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	}()
	tests := []struct {
		name      string
		creds     connectortest.Credentials
		wantErr   string // "" means Connect must succeed
		wantReply string // the first line the application reads
	}{
		{name: "authenticated", creds: connectortest.Credentials{"host": host, "port": port, "password": "s3cret-pass"},
			wantReply: "+PONG\r\n"},
		{name: "wrong password", creds: connectortest.Credentials{"host": host, "port": port, "password": "wrong-pass"},
			wantErr: "WRONGPASS", wantReply: "-ERR secretless: login to"},
		{name: "target down", creds: connectortest.Credentials{"host": host, "port": unused, "password": "s3cret-pass"},
			wantErr: "cannot reach", wantReply: "-ERR secretless: cannot reach"},
		{name: "bad port", creds: connectortest.Credentials{"host": host, "port": "http", "password": "s3cret-pass"},
			wantErr: "not a port number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := connectortest.LoadTCP(t, GetTCPPlugin(), connectortest.Options{Info: PluginInfo()})
			if err != nil {
				t.Fatal(err)
			}
			client, err := k.Connect(t, tt.creds)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Connect: %v", err)
				}
				fmt.Fprint(client, "PING\r\n") // the application, with no password
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Connect error = %v, want one containing %q", err, tt.wantErr)
			}
			if got := reply(t, client); !strings.HasPrefix(got, tt.wantReply) {
				t.Errorf("application read %q, want %q", got, tt.wantReply)
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
		{name: "all credentials declared", opts: connectortest.Options{Declared: []string{"host", "port", "password"}}},
		{name: "password missing", opts: connectortest.Options{Declared: []string{"host", "port"}}, wantErr: "credential password is missing"},
		{name: "literal port checked", opts: connectortest.Options{Declared: []string{"host", "password"}, Literal: connectortest.Credentials{"port": "99999"}},
			wantErr: `credential port "99999" is not a port number`},
		{name: "config block refused", opts: connectortest.Options{Config: []byte("db: 2\n")}, wantErr: "takes no config block"},
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
