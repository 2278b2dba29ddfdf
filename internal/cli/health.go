package cli

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// healthCmd implements "secretless-broker health [-health-addr ADDR] [PATH]":
// it asks a running broker's health server for PATH (default /ready) and
// exits 0 on 200, 1 otherwise. Container images without curl use it as their
// HEALTHCHECK.
func healthCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("health", stderr)
	addr := fs.String("health-addr", ":5335", "the broker's health server address")
	timeout := fs.Duration("timeout", 3*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	path := "/ready"
	switch fs.NArg() {
	case 0:
	case 1:
		path = fs.Arg(0)
	default:
		return usageErr(stderr, "health: want at most one path, such as /ready or /live")
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		return usageErr(stderr, "health: -health-addr %q: want host:port", *addr)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + path
	// Never through $HTTP_PROXY: that may well be this broker.
	c := &http.Client{Timeout: *timeout, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintf(stderr, "secretless-broker: health: %v\n", err)
		return ExitFailure
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Fprintf(stdout, "%s %d %s", url, resp.StatusCode, body)
	if resp.StatusCode != http.StatusOK {
		return ExitFailure
	}
	return ExitOK
}
