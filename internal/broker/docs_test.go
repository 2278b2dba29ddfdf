package broker

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
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
					err = CheckConnectors(cfg, reg, true)
				}
				// Examples may name files and environment variables on the
				// reader's machine (certificates, passwords); their absence
				// here is the only problem allowed.
				if err != nil && !onlyReaderEnvironment(err.Error()) {
					t.Errorf("%s example %d does not load:\n%v\n---\n%s", name, i, err, y)
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
