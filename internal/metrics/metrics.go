// Package metrics defines the broker's Prometheus metrics. Labels carry
// service names, provider names, connector ids and fixed reason words only,
// never a credential value or anything a client sent.
package metrics

import (
	"net/http"
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
	}
	r.MustRegister(m.ConnectionsAccepted, m.ConnectionsActive, m.ConnectionsFailed, m.HandshakeSeconds,
		m.CredentialSeconds, m.CredentialFailures, m.BytesRelayed, m.PluginLoads, m.Reloads, m.HTTPRequests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// ObserveSince records the time since start on h.
func ObserveSince(h prometheus.Observer, start time.Time) { h.Observe(time.Since(start).Seconds()) }
