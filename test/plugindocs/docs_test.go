package plugindocs

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The documents whose shell blocks are run, in this order, all in the same
// $WORK: later documents continue from what earlier ones built.
var runOrder = []string{
	"docs/plugins/build-and-secure.md",
	"docs/plugins/testing.md",
	"docs/plugins/deploy.md",
	"docs/plugins/porting.md",
	"examples/outoftree/README.md",
	"examples/templates/tcp/README.md",
	"examples/templates/http/README.md",
	"examples/ported/README.md",
}

// Documents that are checked for markers and excerpts but have no shell
// blocks to run.
var checkedOnly = []string{"docs/plugins/README.md", "docs/plugins/sdk-reference.md"}

// A marker is an HTML comment on the line right before a fenced block:
//
//	<!-- test: run -->          run the shell block; it must succeed
//	<!-- test: fails -->        run it; it must fail (exit status not 0)
//	<!-- test: output -->       a text block: lines the output of the block
//	                            run just before must contain, in order
//	                            ("..." stands for any text)
//	<!-- test: env -->          a block that only sets the variables the
//	                            test provides (SECRETLESS_SRC, WORK, PATH)
//	<!-- test: skip REASON -->  a shell block that cannot run here
//	<!-- test: file PATH -->    the block is an excerpt of the file PATH
//	                            (relative to the repository), verbatim
//
// Every sh/bash/shell block needs a marker, and fenced blocks need a
// language, so nothing in the docs escapes the test by accident.
var markerRE = regexp.MustCompile(`^<!-- test: (run|fails|output|env|skip|file)(?: (.*?))? -->$`)

type block struct {
	file        string
	line        int // line of the opening fence
	lang        string
	kind, arg   string // from the marker; kind "" when there is none
	body        string
	markerFound bool
}

func (b block) where() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

// parseBlocks returns the fenced blocks of a Markdown file.
func parseBlocks(t *testing.T, r, rel string) []block {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(r, rel))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var out []block
	for i := 0; i < len(lines); i++ {
		fence := strings.TrimLeft(lines[i], " ")
		if !strings.HasPrefix(fence, "```") {
			continue
		}
		ticks := len(fence) - len(strings.TrimLeft(fence, "`"))
		b := block{file: rel, line: i + 1, lang: strings.Fields(fence[ticks:] + " x")[0]}
		if b.lang == "x" {
			b.lang = ""
		}
		if i > 0 {
			if m := markerRE.FindStringSubmatch(strings.TrimSpace(lines[i-1])); m != nil {
				b.kind, b.arg, b.markerFound = m[1], m[2], true
			}
		}
		var body []string
		for i++; i < len(lines); i++ {
			l := strings.TrimLeft(lines[i], " ")
			if strings.HasPrefix(l, strings.Repeat("`", ticks)) && strings.Trim(l, "`") == "" {
				break
			}
			body = append(body, lines[i])
		}
		b.body = strings.Join(body, "\n") + "\n"
		out = append(out, b)
	}
	return out
}

func isShell(lang string) bool { return lang == "sh" || lang == "bash" || lang == "shell" }

// TestDocMarkers checks every fenced block of the documents: shell blocks
// are marked, skips give a reason, and excerpts match their files.
func TestDocMarkers(t *testing.T) {
	r := root(t)
	for _, rel := range append(append([]string{}, runOrder...), checkedOnly...) {
		t.Run(rel, func(t *testing.T) {
			for _, b := range parseBlocks(t, r, rel) {
				switch {
				case b.lang == "":
					t.Errorf("%s: fenced block without a language", b.where())
				case isShell(b.lang) && !b.markerFound:
					t.Errorf("%s: shell block without a <!-- test: ... --> marker", b.where())
				case b.kind == "skip" && strings.TrimSpace(b.arg) == "":
					t.Errorf("%s: skipped block without a reason", b.where())
				case b.kind == "file":
					data, err := os.ReadFile(filepath.Join(r, b.arg))
					if err != nil {
						t.Errorf("%s: %v", b.where(), err)
					} else if !bytes.Contains(data, []byte(b.body)) {
						t.Errorf("%s: this excerpt is not in %s (any more); copy it again:\n%s", b.where(), b.arg, b.body)
					}
				case b.kind == "env":
					for _, l := range strings.Split(strings.TrimSpace(b.body), "\n") {
						if !regexp.MustCompile(`^(export )?(SECRETLESS_SRC|WORK|PATH)=|^mkdir -p "\$WORK"$|^#|^$`).MatchString(strings.TrimSpace(l)) {
							t.Errorf("%s: env block line %q sets something the test does not provide", b.where(), l)
						}
					}
				}
			}
		})
	}
}

// TestDocs runs the shell blocks of the documents in runOrder, as a reader
// would: each in a new "bash -euo pipefail", in $WORK, with SECRETLESS_SRC
// set to this checkout and $WORK/bin first in PATH.
func TestDocs(t *testing.T) {
	need(t, "go", "gcc", "bash", "sha256sum", "curl", "redis-server", "redis-cli")
	r := root(t)
	env := append(os.Environ(), "SECRETLESS_SRC="+r, "WORK="+work,
		"PATH="+filepath.Join(work, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"), "CGO_ENABLED=1", "LC_ALL=C")
	for i, rel := range runOrder {
		if *docsUpTo != "" && i > 0 && strings.Contains(runOrder[i-1], *docsUpTo) {
			break
		}
		ok := t.Run(rel, func(t *testing.T) {
			var last *block
			var lastOut string
			for _, b := range parseBlocks(t, r, rel) {
				switch b.kind {
				case "run", "fails":
					out, err := runBlock(t, env, b)
					if b.kind == "run" && err != nil {
						t.Fatalf("%s: block failed: %v\n--- block:\n%s--- output:\n%s", b.where(), err, b.body, out)
					}
					if b.kind == "fails" && err == nil {
						t.Fatalf("%s: block succeeded, the document says it fails\n--- block:\n%s--- output:\n%s", b.where(), b.body, out)
					}
					last, lastOut = &b, out
				case "output":
					if last == nil {
						t.Fatalf("%s: output block without a block run before it", b.where())
					}
					if missing := matchOutput(b.body, lastOut); missing != "" {
						t.Errorf("%s: the output of %s has no line matching %q\n--- output:\n%s", b.where(), last.where(), missing, lastOut)
					}
				}
			}
		})
		if !ok {
			// Later documents build on this one.
			t.Fatalf("%s failed; not running the documents after it", rel)
		}
	}
}

var docsUpTo = flag.String("docs-up-to", "", "run the documents only up to the first one whose path contains this")

// runBlock runs one shell block in its own process group, with a timeout.
func runBlock(t *testing.T, env []string, b block) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", b.body)
	cmd.Dir, cmd.Env = work, env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A background process that kept the output open must not hang us.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return "", err
	}
	addGroup(cmd.Process.Pid)
	err := cmd.Wait()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out: %w", err)
	}
	return out.String(), err
}

// matchOutput returns the first expected line that no output line matches
// (in order), or "".
func matchOutput(expected, output string) string {
	outLines := strings.Split(output, "\n")
	pos := 0
	for _, want := range strings.Split(expected, "\n") {
		want = strings.TrimRight(want, " ")
		if strings.TrimSpace(want) == "" {
			continue
		}
		parts := strings.Split(want, "...")
		for i, p := range parts {
			parts[i] = regexp.QuoteMeta(p)
		}
		re := regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
		found := false
		for ; pos < len(outLines); pos++ {
			if re.MatchString(strings.TrimRight(outLines[pos], " ")) {
				found = true
				pos++
				break
			}
		}
		if !found {
			return want
		}
	}
	return ""
}

func TestMatchOutput(t *testing.T) {
	const out = "ok      a.so  sha256:0123  example.com/a go1.26.8\n1 plugin(s) verified\n"
	tests := []struct {
		name, expected, want string
	}{
		{name: "exact", expected: "1 plugin(s) verified\n", want: ""},
		{name: "wildcards", expected: "ok      a.so  sha256:...  example.com/a go...\n", want: ""},
		{name: "in order", expected: "ok ...\n1 plugin(s) verified\n", want: ""},
		{name: "out of order", expected: "1 plugin(s) verified\nok ...\n", want: "ok ..."},
		{name: "partial line does not match", expected: "plugin(s) verified\n", want: "plugin(s) verified"},
		{name: "regexp characters are literal", expected: "1 plugin(.) verified\n", want: "1 plugin(.) verified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := matchOutput(tt.expected, out); got != tt.want {
				t.Errorf("matchOutput = %q, want %q", got, tt.want)
			}
		})
	}
}
