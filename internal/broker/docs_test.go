package broker

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/secretless-broker/secretless-broker/internal/config"
	"github.com/secretless-broker/secretless-broker/internal/httpproxy"
	"github.com/secretless-broker/secretless-broker/internal/providers"
	"github.com/secretless-broker/secretless-broker/sdk"
)

// TestDocExamplesLoad: every complete secretless.yml example (a ```yaml
// block that starts with "version: 2" or "services:") in the README, docs/
// and the packages' READMEs passes the same load-time checks as the broker's
// start-up. Connectors that are not built in (plugins) are skipped.
func TestDocExamplesLoad(t *testing.T) {
	root := filepath.Join("..", "..")
	var files []string
	for _, pattern := range []string{"README.md", "docs/*.md", "docs/*/*.md", "internal/*/README.md", "internal/*/*/README.md", "examples/*/*/README.md", "deploy/README.md"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	block := regexp.MustCompile("(?s)```yaml\n(.*?)```")
	reg, err := NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range block.FindAllStringSubmatch(string(data), -1) {
			y := m[1]
			if strings.HasPrefix(y, "services:") {
				y = "version: 2\n" + y
			}
			if !strings.HasPrefix(y, "version: 2") {
				continue
			}
			seen++
			name := strings.TrimPrefix(f, root+"/")
			t.Run(name+"#"+string(rune('0'+i)), func(t *testing.T) {
				file := filepath.Join(t.TempDir(), "secretless.yml")
				if err := os.WriteFile(file, []byte(y), 0o600); err != nil {
					t.Fatal(err)
				}
				cfg, err := LoadConfig(file, nil)
				if err == nil {
					err = CheckConnectors(cfg, reg, nil, true)
				}
				// Examples may name files and environment variables on the
				// reader's machine (certificates, passwords); their absence
				// here is the only problem allowed.
				if err != nil && !onlyReaderEnvironment(err.Error()) {
					t.Errorf("%s example %d does not load:\n%v\n---\n%s", name, i, err, y)
				}
				// Examples teach patterns: none may be one the broker warns
				// about (parsed without the reader's environment).
				if pcfg, perr := config.Parse(file, []byte(y), readerProviders{providers.Default()}); perr == nil {
					for _, svc := range pcfg.Services {
						if e, ok := reg.Lookup(svc.Connector); ok && e.Type == sdk.TypeHTTPConnector {
							if pc, _, perr := httpproxy.ParseConfig(svc.Config); perr == nil && len(pc.Warnings) > 0 {
								t.Errorf("%s example %d, service %s: %v", name, i, svc.Name, pc.Warnings)
							}
						}
					}
				}
			})
		}
	}
	if seen < 4 {
		t.Fatalf("found only %d examples; the search is broken", seen)
	}
}

func onlyReaderEnvironment(msg string) bool {
	for _, line := range strings.Split(msg, "\n") {
		if !strings.Contains(line, "no such file or directory") && !strings.Contains(line, "environment variable is not set") {
			return false
		}
	}
	return true
}

// readerProviders are the broker's providers without their load-time
// checks: an example's variables and files are on the reader's machine.
type readerProviders struct{ providers.Registry }

func (readerProviders) CheckID(string, string) error { return nil }
