package broker

import (
	"io"
	"maps"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/secretless-broker/secretless-broker/internal/registry"
	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// pooledConnector reports a fixed number of idle target connections, taken
// from its config block ("idle: N"), as a pooling connector would.
type pooledConnector struct {
	tcp.Connector
	idle int
}

func (p pooledConnector) IdleConnections() int { return p.idle }

var _ tcp.IdleCounter = pooledConnector{}

var pooledEntry = registry.Entry{ID: "pooled", Type: sdk.TypeTCPConnector, Source: "test", TCP: tcp.PluginFunc(
	func(r connector.Resources) tcp.Connector {
		n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(r.Config()), "idle:")))
		return pooledConnector{Connector: echoEntry.TCP.NewConnector(r), idle: n}
	})}

func pooledYAML(name, addr, tgt string, idle int) string {
	return "  " + name + ":\n    connector: pooled\n    listenOn: tcp://" + addr + "\n    credentials:\n      address: " + tgt +
		"\n      token: t\n    config:\n      idle: " + strconv.Itoa(idle) + "\n"
}

// idleGauges scrapes /metrics and returns secretless_target_connections_idle
// by service.
func idleGauges(t *testing.T, r *running) map[string]string {
	t.Helper()
	resp, err := http.Get("http://" + r.b.HealthAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^secretless_target_connections_idle\{service="([^"]*)"\} (\S+)$`).FindAllStringSubmatch(string(body), -1) {
		out[m[1]] = m[2]
	}
	return out
}

func TestIdleTargetsGauge(t *testing.T) {
	tgt := target(t)
	pAddr, eAddr := freeAddr(t), freeAddr(t)
	t.Setenv("TOKEN_E", "e")
	entries := []registry.Entry{echoEntry, pooledEntry}
	r := startWith(t, "version: 2\nservices:\n"+pooledYAML("p", pAddr, tgt, 3)+svcYAML("e", eAddr, tgt, "TOKEN_E"), entries)

	reload := func(t *testing.T, cfg string, n float64) {
		t.Helper()
		r.rewrite(t, cfg)
		r.reload <- struct{}{}
		deadline := time.Now().Add(5 * time.Second)
		for testutil.ToFloat64(r.b.Metrics().Reloads.WithLabelValues("ok")) != n {
			if time.Now().After(deadline) {
				t.Fatalf("reload did not happen:\n%s", r.logs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	tests := []struct {
		name string
		cfg  string
		want map[string]string
	}{
		{"a pooling connector is reported, others are not", "", map[string]string{"p": "3"}},
		{"a changed service reports its new connector only",
			"version: 2\nservices:\n" + pooledYAML("p", pAddr, tgt, 5) + svcYAML("e", eAddr, tgt, "TOKEN_E"), map[string]string{"p": "5"}},
		{"a removed service is no longer reported",
			"version: 2\nservices:\n" + svcYAML("e", eAddr, tgt, "TOKEN_E"), map[string]string{}},
	}
	reloads := 0.0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg != "" {
				reloads++
				reload(t, tc.cfg, reloads)
			}
			// A stopped service's gauge goes when its drain has finished,
			// in the background after the reload.
			deadline := time.Now().Add(5 * time.Second)
			for {
				got := idleGauges(t, r)
				if maps.Equal(got, tc.want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("idle gauges %v, want %v", got, tc.want)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	if c, err := net.DialTimeout("tcp", pAddr, time.Second); err == nil {
		c.Close()
		t.Error("removed service still accepts")
	}
}
