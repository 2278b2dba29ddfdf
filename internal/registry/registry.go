// Package registry holds the connectors a broker can use, by id. Built-in
// connectors and plugins are registered the same way; the registry only
// records where each came from for messages.
package registry

import (
	"fmt"
	"sort"

	"github.com/secretless-broker/secretless-broker/sdk"
	"github.com/secretless-broker/secretless-broker/sdk/connector/http"
	"github.com/secretless-broker/secretless-broker/sdk/connector/tcp"
)

// Entry is one registered connector.
type Entry struct {
	ID          string
	Type        string // sdk.TypeTCPConnector or sdk.TypeHTTPConnector
	Description string
	Source      string // "built-in" or the plugin file name
	TCP         tcp.Plugin
	HTTP        http.Plugin
}

// Plugin returns the entry's plugin value (TCP or HTTP), for checking the
// optional interfaces it may implement.
func (e Entry) Plugin() any {
	if e.Type == sdk.TypeHTTPConnector {
		return e.HTTP
	}
	return e.TCP
}

// Registry maps connector ids to entries.
type Registry struct{ m map[string]Entry }

// New returns an empty registry.
func New() *Registry { return &Registry{m: map[string]Entry{}} }

// Add registers e; an id already present is an error naming both sources.
func (r *Registry) Add(e Entry) error {
	if old, ok := r.m[e.ID]; ok {
		return fmt.Errorf("connector id %q from %s collides with the one from %s", e.ID, e.Source, old.Source)
	}
	switch {
	case e.Type == sdk.TypeTCPConnector && e.TCP != nil:
	case e.Type == sdk.TypeHTTPConnector && e.HTTP != nil:
	default:
		return fmt.Errorf("connector %q from %s: type %q without a matching plugin value", e.ID, e.Source, e.Type)
	}
	r.m[e.ID] = e
	return nil
}

// Lookup returns the entry for id.
func (r *Registry) Lookup(id string) (Entry, bool) { e, ok := r.m[id]; return e, ok }

// IDs lists registered ids, sorted.
func (r *Registry) IDs() []string {
	out := make([]string, 0, len(r.m))
	for id := range r.m {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}
