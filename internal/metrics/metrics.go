// Package metrics defines the broker's Prometheus metrics. Labels carry
// service names, provider names, connector ids and fixed reason words only,
// never a credential value or anything a client sent.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Failure reasons used in the "reason" label of ConnectionsFailed.
const (
	ReasonCredentials = "credentials" // a provider failed
	ReasonConnector   = "connector"   // the connector returned an error
	ReasonPanic       = "panic"       // the connector panicked
	ReasonLimit       = "limit"       // maxConnections reached
	ReasonTimeout     = "timeout"     // handshake did not finish in time
	ReasonShutdown    = "shutdown"    // closed when the grace period ended
)

// Metrics is the set of broker metrics, registered on its own registry.
type Metrics struct {
	Registry *prometheus.Registry

	ConnectionsAccepted *prometheus.CounterVec   // service
	ConnectionsActive   *prometheus.GaugeVec     // service
	ConnectionsFailed   *prometheus.CounterVec   // service, reason
	HandshakeSeconds    *prometheus.HistogramVec // service
	CredentialSeconds   *prometheus.HistogramVec // provider
	CredentialFailures  *prometheus.CounterVec   // provider
	BytesRelayed        *prometheus.CounterVec   // service, direction
	PluginLoads         *prometheus.CounterVec   // result
	Reloads             *prometheus.CounterVec   // result
	HTTPRequests        *prometheus.CounterVec   // service, code

	// IdleTargets reports target connections that connectors keep open
	// between clients (the pg connector's serverPool), per service.
	IdleTargets *IdleTargets
}

// New creates and registers the metrics.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		ConnectionsAccepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secretless_connections_accepted_total", Help: "Client connections accepted."}, []string{"service"}),
		ConnectionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "secretless_connections_active", Help: "Client connections open now."}, []string{"service"}),
		ConnectionsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secretless_connections_failed_total", Help: "Client connections closed before relaying, by reason."}, []string{"service", "reason"}),
		HandshakeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "secretless_handshake_seconds", Help: "Time from accept to an authenticated target connection (target dial and authentication).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"service"}),
		CredentialSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "secretless_credential_fetch_seconds", Help: "Credential fetch latency per provider.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 12)}, []string{"provider"}),
		CredentialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secretless_credential_fetch_failures_total", Help: "Credential fetch failures per provider."}, []string{"provider"}),
		BytesRelayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secretless_bytes_relayed_total", Help: "Bytes relayed, by direction (to_target, to_client)."}, []string{"service", "direction"}),
		PluginLoads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secretless_plugin_loads_total", Help: "Plugin load attempts at start-up, by result."}, []string{"result"}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secretless_config_reloads_total", Help: "Configuration reloads, by result."}, []string{"result"}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secretless_http_requests_total", Help: "HTTP proxy requests, by service and status code."}, []string{"service", "code"}),
		IdleTargets: newIdleTargets(),
	}
	r.MustRegister(m.ConnectionsAccepted, m.ConnectionsActive, m.ConnectionsFailed, m.HandshakeSeconds,
		m.CredentialSeconds, m.CredentialFailures, m.BytesRelayed, m.PluginLoads, m.Reloads, m.HTTPRequests, m.IdleTargets,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// ObserveSince records the time since start on h.
func ObserveSince(h prometheus.Observer, start time.Time) { h.Observe(time.Since(start).Seconds()) }

// IdleTargets is the secretless_target_connections_idle gauge: authenticated
// target connections a connector holds open for reuse, read from the
// connectors themselves at each scrape. During a reload the old and the new
// connector of a service may both hold some; the gauge is their sum.
type IdleTargets struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	srcs map[any]idleSource
}

type idleSource struct {
	service string
	count   func() int
}

func newIdleTargets() *IdleTargets {
	return &IdleTargets{
		desc: prometheus.NewDesc("secretless_target_connections_idle",
			"Authenticated target connections kept open between clients for reuse (pg serverPool); they count against the server's connection limit.",
			[]string{"service"}, nil),
		srcs: make(map[any]idleSource),
	}
}

// Add reports count under service until Remove(key).
func (g *IdleTargets) Add(key any, service string, count func() int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.srcs[key] = idleSource{service: service, count: count}
}

// Remove stops reporting the source added under key.
func (g *IdleTargets) Remove(key any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.srcs, key)
}

// Describe implements prometheus.Collector.
func (g *IdleTargets) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

// Collect implements prometheus.Collector.
func (g *IdleTargets) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	sums := make(map[string]int)
	for _, s := range g.srcs {
		sums[s.service] += s.count()
	}
	g.mu.Unlock()
	for svc, n := range sums {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(n), svc)
	}
}

var _ prometheus.Collector = (*IdleTargets)(nil)
