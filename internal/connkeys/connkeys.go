// Package connkeys checks the keys of an HTTP connector's config block:
// what is left of a service's config once the proxy has taken its own keys
// (authenticateURLsMatching, forceSSL, ...). A key that belongs to neither
// is reported with its name and, when it is close to one, the key meant.
package connkeys

import (
	"errors"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/secretless-broker/secretless-broker/internal/typo"
)

// ProxyKeys are the config keys the HTTP proxy reads itself (kept equal to
// httpproxy's by a test there).
var ProxyKeys = []string{"authenticateURLsMatching", "forceSSL", "allowWebSockets", "passthroughUnmatched", "caBundle", "timeouts", "interceptConnect"}

// Unknown reports every top-level key of block that is not in known, one
// line "config.KEY: unknown key ..." each (the broker shows each at its
// key's line). connector names the connector in the message.
func Unknown(block []byte, connector string, known []string) error {
	var root yaml.Node
	if err := yaml.Unmarshal(block, &root); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	n := &root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return errors.New("config: must be a mapping")
	}
	own := "takes no config keys of its own"
	if len(known) > 0 {
		own = "takes " + strings.Join(known, ", ")
	}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if contains(known, k) {
			continue
		}
		msg := fmt.Sprintf("config.%s: unknown key: %s %s, and the proxy reads %s", k, connector, own, strings.Join(ProxyKeys, ", "))
		if meant := typo.Closest(k, append(append([]string(nil), known...), ProxyKeys...), nil); meant != "" {
			msg = fmt.Sprintf("config.%s: unknown key; did you mean %q?", k, meant)
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(errs...)
}

// UnknownUnder reports every key of the mapping under the top-level key
// parent of block that is not in known, one line "config.PARENT.KEY:
// unknown key ..." each; nothing when parent is absent or not a mapping
// (the connector's own decoding reports that).
func UnknownUnder(block []byte, parent string, known []string) error {
	var root yaml.Node
	if err := yaml.Unmarshal(block, &root); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	n := &root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != parent || n.Content[i+1].Kind != yaml.MappingNode {
			continue
		}
		m := n.Content[i+1]
		for j := 0; j+1 < len(m.Content); j += 2 {
			k := m.Content[j].Value
			if contains(known, k) {
				continue
			}
			msg := fmt.Sprintf("config.%s.%s: unknown key (known: %s)", parent, k, strings.Join(known, ", "))
			if meant := typo.Closest(k, known, nil); meant != "" {
				msg = fmt.Sprintf("config.%s.%s: unknown key; did you mean %q?", parent, k, meant)
			}
			errs = append(errs, errors.New(msg))
		}
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
