// Package config loads and validates secretless.yml (version 2).
//
// A file looks like:
//
//	version: 2
//	services:
//	  pg:
//	    connector: pg
//	    listenOn: tcp://127.0.0.1:5432     # or unix:///run/secretless/.s.PGSQL.5432
//	    socketMode: "0660"                 # unix sockets only; default 0660
//	    maxConnections: 100                # optional; default unlimited
//	    connectTimeout: 10s                # optional; default 30s
//	    idleTimeout: 30m                   # optional; default never
//	    credentials:
//	      host: db.internal                # a bare scalar is a literal
//	      username: app
//	      password:
//	        from: env                      # a provider
//	        get: PG_PASSWORD               # the id the provider looks up
//	    config:                            # connector-specific, passed as YAML bytes
//	      connectTimeout: 5s               # (pg: how long dialing may take)
//
// Every problem found is reported, each as "FILE:LINE: KEY.PATH: message".
// Connector ids and address collisions are checked later, once plugins are
// loaded (see CheckAddresses), but still before any listener opens.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// DefaultSocketMode is the permission of unix socket listeners unless a
// service sets socketMode: owner and group may connect, others may not.
const DefaultSocketMode os.FileMode = 0o660

// Config is a validated configuration file.
type Config struct {
	File     string    // path the config was read from
	Services []Service // in file order
}

// Service is one entry under services:.
type Service struct {
	Name        string
	Connector   string
	ListenOn    Address
	SocketMode  os.FileMode
	Credentials []Credential // sorted by name
	Config      []byte       // the config block re-encoded as YAML; nil when absent

	// Limits (all optional; zero means the default).
	MaxConnections int           // concurrent client connections; 0 = unlimited
	ConnectTimeout time.Duration // credential fetch + connector handshake; 0 = 30s
	IdleTimeout    time.Duration // close a session idle this long; 0 = never

	line          int            // line of the service key
	keyLines      map[string]int // line of each key of the service
	connectorLine int
	listenLine    int
	configNode    *yaml.Node
}

// Credential is one entry under a service's credentials:.
type Credential struct {
	Name string
	From string // provider name; "literal" for bare scalars
	Get  string // the id handed to the provider (the literal value for literal)
	Line int
}

// Address is a parsed listenOn value.
type Address struct {
	Network string // "tcp" or "unix"
	Address string // host:port or absolute socket path
	Raw     string
}

func (a Address) String() string { return a.Raw }

// ProviderInfo tells the config loader which credential providers exist and
// whether each needs a "get" id.
type ProviderInfo interface {
	Known(name string) bool
	NeedsID(name string) bool
	Names() []string
}

// IDChecker may be implemented by a ProviderInfo to tell, at load time,
// that a credential's id cannot be fetched (an environment variable that is
// not set, a file that does not exist), so that the mistake stops start-up
// instead of failing every connection.
type IDChecker interface {
	CheckID(provider, id string) error
}

// Problem is one configuration error.
type Problem struct {
	File string
	Line int
	Path string
	Msg  string
}

func (p Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error holds every problem found in one file.
type Error struct {
	Problems []Problem
	// Partial, when set, holds the services of the file that have no
	// problem of their own, for checks that come after parsing (their
	// connectors), so that one run reports every problem of the file.
	Partial *Config
}

// CanCheckLater reports whether err is a parse *Error with services left
// to check further (see WithLaterProblems).
func CanCheckLater(err error) bool {
	var ce *Error
	return errors.As(err, &ce) && ce.Partial != nil && len(ce.Partial.Services) > 0
}

// WithLaterProblems returns err with the problems of a later check of its
// Partial config added, in line order: check's *Error problems, when err
// is a parse *Error with a Partial config. Anything else is err unchanged.
func WithLaterProblems(err error, check func(*Config) error) error {
	if !CanCheckLater(err) {
		return err
	}
	var ce *Error
	errors.As(err, &ce)
	var later *Error
	if !errors.As(check(ce.Partial), &later) || len(later.Problems) == 0 {
		return err
	}
	all := append(append([]Problem(nil), ce.Problems...), later.Problems...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].Line < all[j].Line })
	return &Error{Problems: all}
}

func (e *Error) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	return strings.Join(msgs, "\n")
}

// ErrNotFound is returned by Find when no config file exists in the default places.
var ErrNotFound = errors.New("no config file found")

// Find returns the config file to use when -f is not given: ./secretless.yml,
// then ~/.secretless.yml, then /etc/secretless.yml.
func Find() (string, error) {
	candidates := []string{"secretless.yml"}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".secretless.yml"))
	}
	candidates = append(candidates, "/etc/secretless.yml")
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w (looked for %s; use -f FILE)", ErrNotFound, strings.Join(candidates, ", "))
}

// MaxFileSize is the largest config file Load reads.
const MaxFileSize = 16 << 20

// Load reads and validates a config file: a regular file of at most
// MaxFileSize bytes.
func Load(file string, providers ProviderInfo) (*Config, error) {
	data, err := ReadFile(file)
	if err != nil {
		return nil, err
	}
	return Parse(file, data, providers)
}

// ReadFile reads a config file: a regular file (a symlink to one is fine)
// of at most MaxFileSize bytes. It never blocks on a fifo or a device put
// at the path, and never reads more than the limit.
func ReadFile(file string) ([]byte, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read config %s: not a regular file (%s)", file, st.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("read config %s: larger than %d bytes", file, MaxFileSize)
	}
	return data, nil
}

type parser struct {
	file        string
	problems    []Problem
	providers   ProviderInfo
	mergeDepths map[*yaml.Node]int
}

func (p *parser) addf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.problems = append(p.problems, Problem{File: p.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Parse validates config bytes; file is used in messages only.
func Parse(file string, data []byte, providers ProviderInfo) (cfg *Config, err error) {
	defer func() {
		// No input may crash the broker: turn an unexpected panic in the YAML
		// library into an ordinary config error.
		if r := recover(); r != nil {
			cfg, err = nil, &Error{Problems: []Problem{{File: file, Msg: fmt.Sprintf("cannot parse config: %v", r)}}}
		}
	}()
	p := &parser{file: file, providers: providers, mergeDepths: map[*yaml.Node]int{}}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if errors.Is(err, io.EOF) {
			msg = "file is empty"
		}
		line := 0
		if n, ok := yamlErrLine(msg); ok {
			line = n
		}
		return nil, &Error{Problems: []Problem{{File: file, Line: line, Msg: "invalid YAML: " + msg}}}
	}
	var extra yaml.Node
	if dec.Decode(&extra) == nil {
		p.addf(&extra, "", "more than one YAML document; put everything in one")
	}
	cfg = &Config{File: file}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		p.addf(root, "", "top level must be a mapping with version and services")
		return nil, &Error{Problems: p.problems}
	}
	p.duplicateKeys(root, "", roleRoot)
	var versionSeen, servicesSeen bool
	forEachPair(root, func(k, v *yaml.Node) {
		switch k.Value {
		case "version":
			versionSeen = true
			if v.Kind != yaml.ScalarNode || v.Value != "2" {
				p.addf(v, "version", "unsupported version %q: only version 2 is supported", v.Value)
			}
		case "services":
			servicesSeen = true
			cfg.Services = p.services(v)
		case "listeners", "handlers":
			p.addf(k, k.Value, "version 1 keys are not supported; convert the file to version 2 (services:)")
		default:
			if strings.HasPrefix(k.Value, "x-") {
				return // a place for YAML anchors, as in docker-compose files
			}
			p.addf(k, k.Value, "unknown key (expected version, services; a top-level key starting with x- may hold YAML anchors)")
		}
	})
	if !versionSeen {
		p.addf(root, "version", "missing (add \"version: 2\")")
	}
	if !servicesSeen {
		p.addf(root, "services", "missing")
	} else if len(cfg.Services) == 0 && len(p.problems) == 0 {
		p.addf(root, "services", "no services defined")
	}
	if len(p.problems) > 0 {
		sort.SliceStable(p.problems, func(i, j int) bool { return p.problems[i].Line < p.problems[j].Line })
		return nil, &Error{Problems: p.problems, Partial: cfg.without(p.problems)}
	}
	return cfg, nil
}

// without returns a copy of c holding only the services that none of
// problems is about, or nil when a problem is outside every service (an
// x- anchor a service may merge, the version): later checks could then
// report it again, at another line.
func (c *Config) without(problems []Problem) *Config {
	for _, p := range problems {
		if !strings.HasPrefix(p.Path, "services.") {
			return nil
		}
	}
	out := *c
	out.Services = nil
	for _, s := range c.Services {
		prefix := "services." + s.Name
		clean := true
		for _, p := range problems {
			if p.Path == prefix || strings.HasPrefix(p.Path, prefix+".") {
				clean = false
				break
			}
		}
		if clean {
			out.Services = append(out.Services, s)
		}
	}
	return &out
}

// duplicateKeys reports every key given twice in one mapping, anywhere in
// the file: YAML requires unique keys, and taking the last value would
// silently drop the first (a second services: block, a listenOn that moves
// a listener from loopback to every interface). Service names and
// credential names have their own messages. Aliases are not followed: what
// they point to is checked where it is written.
func (p *parser) duplicateKeys(n *yaml.Node, path string, role keyRole) {
	switch n.Kind {
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p.duplicateKeys(c, fmt.Sprintf("%s[%d]", path, i), roleOther)
		}
	case yaml.MappingNode:
		own := role == roleServices || role == roleCredentials
		first := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			// A key written as an alias (*k : value) is the key it names.
			k, v := resolve(n.Content[i]), n.Content[i+1]
			kp := k.Value
			if path != "" {
				kp = path + "." + k.Value
			}
			if isMerge(k) {
				if mergeSources(resolve(v)) == nil {
					p.addf(k, kp, "must merge a mapping or a list of mappings (<<: *anchor or <<: [*a, *b])")
				} else if mergeDepth(n, p.mergeDepths) > maxMergeDepth {
					p.addf(k, kp, "merges nested more than %d deep; their keys would be lost", maxMergeDepth)
				}
				continue // the merged mapping is checked where it is written
			}
			if k.Kind == yaml.ScalarNode && !own {
				if line, dup := first[k.Value]; dup {
					p.addf(n.Content[i], kp, "given twice (first on line %d); each key may appear once", line)
				} else {
					first[k.Value] = k.Line
				}
			}
			p.duplicateKeys(v, kp, childRole(role, k))
		}
	}
}

// keyRole is where a mapping stands in the file, for duplicateKeys.
type keyRole int

const (
	roleOther       keyRole = iota
	roleRoot                // the top level
	roleServices            // the services mapping
	roleService             // one service
	roleCredentials         // a service's credentials
)

// childRole is the role of the value of key k in a mapping of role r.
func childRole(r keyRole, k *yaml.Node) keyRole {
	switch {
	case r == roleRoot && k.Value == "services":
		return roleServices
	case r == roleServices:
		return roleService
	case r == roleService && k.Value == "credentials":
		return roleCredentials
	}
	return roleOther
}

func yamlErrLine(msg string) (int, bool) {
	// yaml.v3 messages look like "line 3: did not find expected key".
	var n int
	if _, err := fmt.Sscanf(msg, "line %d:", &n); err == nil {
		return n, true
	}
	return 0, false
}

// forEachPair calls f for each key and value of a mapping, with aliases
// (*anchor) resolved.
// forEachPair calls f for each key of mapping m, including keys merged in
// with "<<" (YAML merge keys, as Secretless's YAML library took them): a
// key written in m wins over a merged one, and an earlier merge source
// over a later one.
func forEachPair(m *yaml.Node, f func(k, v *yaml.Node)) {
	seen := map[string]bool{}
	visited := map[*yaml.Node]bool{m: true}
	eachPair(m, 0, visited, func(k, v *yaml.Node, merged bool) {
		if k.Kind == yaml.ScalarNode {
			// A key written twice in m itself is passed on twice (and
			// reported); a merged key only when m does not have it.
			if merged && seen[k.Value] {
				return
			}
			seen[k.Value] = true
		}
		f(k, v)
	})
}

// maxMergeDepth bounds merges of merges.
const maxMergeDepth = 8

// eachPair walks m's own pairs, then its merge sources in order. A source
// reached a second time (through aliases, at any depth) is skipped: its
// keys were all offered the first time, so merges of merges cost one visit
// per distinct mapping, not one per path to it.
func eachPair(m *yaml.Node, depth int, visited map[*yaml.Node]bool, f func(k, v *yaml.Node, merged bool)) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := resolve(m.Content[i]); !isMerge(k) {
			f(k, resolve(m.Content[i+1]), depth > 0)
		}
	}
	if depth >= maxMergeDepth {
		return // reported by duplicateKeys (mergeDepth)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if isMerge(resolve(m.Content[i])) {
			for _, src := range mergeSources(resolve(m.Content[i+1])) {
				if !visited[src] {
					visited[src] = true
					eachPair(src, depth+1, visited, f)
				}
			}
		}
	}
}

// mergeDepth is how deeply m's merges nest (0: none), memoized in seen; a
// merge cycle counts as too deep.
func mergeDepth(m *yaml.Node, seen map[*yaml.Node]int) int {
	if d, ok := seen[m]; ok {
		return d
	}
	seen[m] = maxMergeDepth + 1 // in progress: a cycle is too deep
	d := 0
	for i := 0; i+1 < len(m.Content); i += 2 {
		if isMerge(resolve(m.Content[i])) {
			for _, src := range mergeSources(resolve(m.Content[i+1])) {
				d = max(d, 1+mergeDepth(src, seen))
			}
		}
	}
	seen[m] = d
	return d
}

// isMerge reports whether k is the merge key "<<".
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "!!merge" || k.Tag == "")
}

// mergeSources is what a "<<" merges: a mapping, or a list of mappings;
// nil for anything else (duplicateKeys reports it).
func mergeSources(v *yaml.Node) []*yaml.Node {
	switch v.Kind {
	case yaml.MappingNode:
		return []*yaml.Node{v}
	case yaml.SequenceNode:
		out := make([]*yaml.Node, 0, len(v.Content))
		for _, c := range v.Content {
			c = resolve(c)
			if c.Kind != yaml.MappingNode {
				return nil
			}
			out = append(out, c)
		}
		return out
	}
	return nil
}

// maxExpanded bounds the nodes a config block may expand to once its
// aliases and merges are written out (a "billion laughs" block stops here).
const maxExpanded = 100000

// expand returns a copy of n with every alias replaced by what it names and
// every merge written out, so that the copy encodes to YAML that stands on
// its own (a connector's config block may use anchors defined elsewhere in
// the file).
func expand(n *yaml.Node, budget *int) (*yaml.Node, error) {
	n = resolve(n)
	if *budget--; *budget < 0 {
		return nil, errors.New("too large once its aliases are expanded")
	}
	c := *n
	c.Anchor, c.Alias, c.Content = "", nil, nil
	switch n.Kind {
	case yaml.AliasNode:
		return nil, errors.New("an alias that names nothing, or aliases nested too deeply")
	case yaml.MappingNode:
		var err error
		forEachPair(n, func(k, v *yaml.Node) {
			if err != nil {
				return
			}
			var kk, vv *yaml.Node
			if kk, err = expand(k, budget); err != nil {
				return
			}
			if vv, err = expand(v, budget); err != nil {
				return
			}
			c.Content = append(c.Content, kk, vv)
		})
		if err != nil {
			return nil, err
		}
	case yaml.SequenceNode:
		for _, e := range n.Content {
			ee, err := expand(e, budget)
			if err != nil {
				return nil, err
			}
			c.Content = append(c.Content, ee)
		}
	}
	return &c, nil
}

func resolve(n *yaml.Node) *yaml.Node {
	for depth := 0; n.Kind == yaml.AliasNode && n.Alias != nil && depth < 8; depth++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func (p *parser) services(n *yaml.Node) []Service {
	if n.Kind != yaml.MappingNode {
		if isNull(n) {
			return nil
		}
		p.addf(n, "services", "must be a mapping of service name to service")
		return nil
	}
	var out []Service
	seen := map[string]bool{}
	forEachPair(n, func(k, v *yaml.Node) {
		name := k.Value
		path := "services." + name
		if seen[name] {
			p.addf(k, path, "service defined twice")
			return
		}
		seen[name] = true
		if name == "" {
			p.addf(k, "services", "empty service name")
			return
		}
		if s, ok := p.service(path, name, k, v); ok {
			out = append(out, s)
		}
	})
	return out
}

func (p *parser) service(path, name string, k, n *yaml.Node) (Service, bool) {
	s := Service{Name: name, line: k.Line, SocketMode: DefaultSocketMode}
	if n.Kind != yaml.MappingNode {
		p.addf(n, path, "must be a mapping with connector, listenOn, credentials")
		return s, false
	}
	before := len(p.problems)
	var listenSeen, modeSeen bool
	s.keyLines = map[string]int{}
	forEachPair(n, func(k, v *yaml.Node) {
		kp := path + "." + k.Value
		if _, ok := s.keyLines[k.Value]; !ok {
			s.keyLines[k.Value] = k.Line
		}
		switch k.Value {
		case "connector", "protocol": // protocol: deprecated Secretless spelling
			if s.Connector != "" {
				if k.Value != "connector" || s.keyLines["protocol"] != 0 {
					p.addf(k, kp, "connector given twice (as connector or its old name protocol)")
				}
				return
			}
			if v.Kind != yaml.ScalarNode || v.Value == "" || isNull(v) {
				p.addf(v, kp, "must be a connector id such as pg")
				return
			}
			s.Connector, s.connectorLine = v.Value, v.Line
		case "listenOn":
			listenSeen = true
			if v.Kind != yaml.ScalarNode || isNull(v) {
				p.addf(v, kp, "must be tcp://host:port or unix:///absolute/path")
				return
			}
			a, err := ParseAddress(v.Value)
			if err != nil {
				p.addf(v, kp, "%v", err)
				return
			}
			s.ListenOn, s.listenLine = a, v.Line
		case "socketMode":
			modeSeen = true
			m, err := strconv.ParseUint(v.Value, 8, 32)
			if v.Kind != yaml.ScalarNode || err != nil || m > 0o777 {
				p.addf(v, kp, "must be an octal permission such as \"0660\"")
				return
			}
			s.SocketMode = os.FileMode(m)
		case "maxConnections":
			n, err := strconv.Atoi(v.Value)
			if v.Kind != yaml.ScalarNode || err != nil || n < 0 {
				p.addf(v, kp, "must be a whole number >= 0 (0 means unlimited)")
				return
			}
			s.MaxConnections = n
		case "connectTimeout", "idleTimeout":
			d, err := time.ParseDuration(v.Value)
			if v.Kind != yaml.ScalarNode || err != nil || d < 0 {
				p.addf(v, kp, "must be a duration such as \"10s\" or \"5m\"")
				return
			}
			if k.Value == "connectTimeout" {
				s.ConnectTimeout = d
			} else {
				s.IdleTimeout = d
			}
		case "credentials":
			s.Credentials = p.credentials(kp, v)
		case "config":
			if isNull(v) {
				return
			}
			budget := maxExpanded
			ev, err := expand(v, &budget)
			if err != nil {
				p.addf(v, kp, "%v", err)
				return
			}
			b, err := yaml.Marshal(ev)
			if err != nil {
				p.addf(v, kp, "cannot encode: %v", err)
				return
			}
			s.Config, s.configNode = b, ev
		default:
			p.addf(k, kp, "unknown key (expected connector, listenOn, credentials, config, socketMode, maxConnections, connectTimeout, idleTimeout)")
		}
	})
	if s.Connector == "" && len(p.problems) == before {
		p.addf(k, path+".connector", "missing")
	}
	if !listenSeen {
		p.addf(k, path+".listenOn", "missing")
	}
	if modeSeen && s.ListenOn.Network == "tcp" {
		p.problems = append(p.problems, Problem{File: p.file, Line: s.keyLines["socketMode"], Path: path + ".socketMode", Msg: "only applies to unix:// listeners"})
	}
	return s, len(p.problems) == before
}

func (p *parser) credentials(path string, n *yaml.Node) []Credential {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.addf(n, path, "must be a mapping of credential name to a value or {from: PROVIDER, get: ID}")
		return nil
	}
	var out []Credential
	seen := map[string]bool{}
	forEachPair(n, func(k, v *yaml.Node) {
		cp := path + "." + k.Value
		if seen[k.Value] {
			p.addf(k, cp, "credential defined twice")
			return
		}
		seen[k.Value] = true
		c := Credential{Name: k.Value, Line: k.Line}
		switch v.Kind {
		case yaml.ScalarNode:
			if isNull(v) {
				p.addf(v, cp, "has no value (write a literal, or {from: PROVIDER, get: ID})")
				return
			}
			c.From, c.Get = "literal", v.Value
		case yaml.MappingNode:
			var fromSeen, getSeen bool
			forEachPair(v, func(kk, vv *yaml.Node) {
				switch kk.Value {
				case "from":
					fromSeen = !isNull(vv)
					c.From = vv.Value
				case "get":
					getSeen = !isNull(vv)
					c.Get = vv.Value
				default:
					p.addf(kk, cp+"."+kk.Value, "unknown key (expected from, get)")
				}
				if vv.Kind != yaml.ScalarNode {
					p.addf(vv, cp+"."+kk.Value, "must be a string")
				}
			})
			switch {
			case !fromSeen || c.From == "":
				p.addf(v, cp+".from", "missing provider (one of %s)", strings.Join(p.providers.Names(), ", "))
				return
			case !p.providers.Known(c.From):
				p.addf(v, cp+".from", "unknown provider %q (known: %s)", c.From, strings.Join(p.providers.Names(), ", "))
				return
			case (!getSeen || c.Get == "") && p.providers.NeedsID(c.From):
				p.addf(v, cp+".get", "missing: provider %q needs an id to look up", c.From)
				return
			}
			if ch, ok := p.providers.(IDChecker); ok {
				if err := ch.CheckID(c.From, c.Get); err != nil {
					p.addf(v, cp, "from %s: %v", c.From, err)
					return
				}
			}
		default:
			p.addf(v, cp, "must be a value or {from: PROVIDER, get: ID}")
			return
		}
		out = append(out, c)
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ParseAddress parses a listenOn value.
func ParseAddress(raw string) (Address, error) {
	a := Address{Raw: raw}
	switch {
	case strings.HasPrefix(raw, "tcp://"):
		hp := strings.TrimPrefix(raw, "tcp://")
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			return a, fmt.Errorf("malformed address %q: want tcp://host:port", raw)
		}
		if strings.ContainsAny(host, "/ @?#") || strings.ContainsFunc(host, unicode.IsControl) {
			return a, fmt.Errorf("malformed address %q: bad host %q", raw, host)
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			return a, fmt.Errorf("malformed address %q: port %q is not a number", raw, port)
		}
		if n < 1 || n > 65535 {
			return a, fmt.Errorf("port %d out of range 1-65535 in %q", n, raw)
		}
		a.Network, a.Address = "tcp", net.JoinHostPort(host, strconv.Itoa(n))
	case strings.HasPrefix(raw, "unix://"):
		path := strings.TrimPrefix(raw, "unix://")
		if !filepath.IsAbs(path) {
			return a, fmt.Errorf("malformed address %q: want unix:///absolute/path", raw)
		}
		if strings.HasSuffix(path, "/") {
			return a, fmt.Errorf("malformed address %q: names a directory, not a socket file", raw)
		}
		if strings.ContainsFunc(path, unicode.IsControl) {
			return a, fmt.Errorf("malformed address %q: control character in the path", raw)
		}
		if len(path) > 107 {
			return a, fmt.Errorf("socket path %q is longer than the 107 bytes unix sockets allow", path)
		}
		a.Network, a.Address = "unix", filepath.Clean(path)
	default:
		return a, fmt.Errorf("malformed address %q: want tcp://host:port or unix:///absolute/path", raw)
	}
	return a, nil
}

// Conflicts reports whether two listen addresses cannot both be bound.
func Conflicts(a, b Address) bool {
	if a.Network != b.Network {
		return false
	}
	if a.Network == "unix" {
		return a.Address == b.Address
	}
	ha, pa, _ := net.SplitHostPort(a.Address)
	hb, pb, _ := net.SplitHostPort(b.Address)
	if pa != pb {
		return false
	}
	ka, kb := listenHosts(ha), listenHosts(hb)
	if ka == nil || kb == nil {
		return true // a wildcard
	}
	for _, x := range ka {
		for _, y := range kb {
			if x == y {
				return true
			}
		}
	}
	return false
}

// listenHosts is what a listen host binds, for comparing: nil for a
// wildcard (every address), the canonical form of an IP address (so
// 0:0::1 is ::1), both loopback addresses for localhost, else the name
// in lower case.
func listenHosts(h string) []string {
	if ip := net.ParseIP(h); ip != nil {
		if ip.IsUnspecified() {
			return nil
		}
		return []string{ip.String()}
	}
	switch h = strings.TrimSuffix(strings.ToLower(h), "."); h {
	case "":
		return nil
	case "localhost":
		return []string{"127.0.0.1", "::1", h}
	}
	return []string{h}
}

// CheckReserved reports services whose listen address collides with addr,
// a TCP address the broker itself listens on (what says which: "the health
// server's (-health-addr)").
func CheckReserved(cfg *Config, addr, what string) []Problem {
	var out []Problem
	own := Address{Network: "tcp", Address: addr}
	for _, s := range cfg.Services {
		if Conflicts(s.ListenOn, own) {
			out = append(out, cfg.ServiceProblem(s, "listenOn", "address %s is also %s", s.ListenOn, what))
		}
	}
	return out
}

// CheckAddresses reports services whose listen addresses collide. Services
// whose connectors are HTTP connectors (shared reports which) may share one
// exact address: one forward proxy serves them and routes by URL. Parse cannot
// know connector types (plugins load later), so the broker calls this once
// connectors are registered, still before any listener opens.
func CheckAddresses(cfg *Config, shared func(connector string) bool) []Problem {
	var out []Problem
	svcs := cfg.Services
	for i := range svcs {
		for j := 0; j < i; j++ {
			a, b := svcs[i], svcs[j]
			if !Conflicts(a.ListenOn, b.ListenOn) {
				continue
			}
			if a.ListenOn.Address == b.ListenOn.Address && shared(a.Connector) && shared(b.Connector) {
				// One listener serves both: one socket, one mode.
				if a.ListenOn.Network == "unix" && a.SocketMode != b.SocketMode {
					out = append(out, Problem{File: cfg.File, Line: a.listenLine, Path: "services." + a.Name + ".socketMode",
						Msg: fmt.Sprintf("%04o differs from the %04o of service %q on the same socket; services sharing a socket must give the same socketMode",
							a.SocketMode.Perm(), b.SocketMode.Perm(), b.Name)})
					break
				}
				continue
			}
			out = append(out, Problem{File: cfg.File, Line: a.listenLine, Path: "services." + a.Name + ".listenOn",
				Msg: fmt.Sprintf("address %s is also used by service %q", a.ListenOn, b.Name)})
			break
		}
	}
	return out
}

// ConnectorProblem builds the error for a service whose connector is unknown
// or unusable, in the same FILE:LINE: KEY: form as load-time problems.
func (c *Config) ConnectorProblem(s Service, format string, args ...any) Problem {
	return Problem{File: c.File, Line: s.connectorLine, Path: "services." + s.Name + ".connector", Msg: fmt.Sprintf(format, args...)}
}

// ServiceProblem builds an error about a service's key, at that key's line
// when the service has it (else the service's).
func (c *Config) ServiceProblem(s Service, key, format string, args ...any) Problem {
	line := s.line
	if l, ok := s.keyLines[key]; ok {
		line = l
	}
	return Problem{File: c.File, Line: line, Path: "services." + s.Name + "." + key, Msg: fmt.Sprintf(format, args...)}
}

// CredentialProblem builds an error about one credential of a service, with
// the line of that credential when the service has it (else the service's).
func (c *Config) CredentialProblem(s Service, name, msg string) Problem {
	line := s.line
	for _, cr := range s.Credentials {
		if cr.Name == name {
			line = cr.Line
			break
		}
	}
	return Problem{File: c.File, Line: line, Path: "services." + s.Name + ".credentials." + name, Msg: msg}
}

// HasCredential reports whether a service has a credential of that name.
func (s Service) HasCredential(name string) bool {
	for _, cr := range s.Credentials {
		if cr.Name == name {
			return true
		}
	}
	return false
}

// Equal reports whether two services have the same settings, ignoring where
// in the file they were written (so a reload that only moved lines changes
// nothing).
func (s Service) Equal(o Service) bool {
	if s.Name != o.Name || s.Connector != o.Connector || s.ListenOn != o.ListenOn || s.SocketMode != o.SocketMode ||
		!bytes.Equal(s.Config, o.Config) || s.MaxConnections != o.MaxConnections ||
		s.ConnectTimeout != o.ConnectTimeout || s.IdleTimeout != o.IdleTimeout || len(s.Credentials) != len(o.Credentials) {
		return false
	}
	for i, c := range s.Credentials {
		d := o.Credentials[i]
		if c.Name != d.Name || c.From != d.From || c.Get != d.Get {
			return false
		}
	}
	return true
}

// ConfigKeyProblem builds an error about a key inside a service's config
// block, given as a dotted path such as "tls.mode" (list items as
// "name[2]"), with the line of that key in the file when it can be found.
func (c *Config) ConfigKeyProblem(s Service, key, msg string) Problem {
	line := s.line
	if n := findKey(s.configNode, key); n != nil {
		line = n.Line
	} else if s.configNode != nil {
		line = s.configNode.Line
	}
	path := "services." + s.Name + ".config"
	if key != "" {
		path += "." + key
	}
	return Problem{File: c.File, Line: line, Path: path, Msg: msg}
}

// HasConfigKey reports whether a dotted key path exists in a service's
// config block.
func (c *Config) HasConfigKey(s Service, key string) bool {
	n := findKey(s.configNode, key)
	if n == nil {
		return false
	}
	last := key[strings.LastIndexByte(key, '.')+1:]
	if i := strings.IndexByte(last, '['); i >= 0 {
		return true
	}
	return n.Value == last
}

// findKey walks a dotted key path through mapping (and sequence) nodes.
func findKey(n *yaml.Node, key string) *yaml.Node {
	if n == nil || key == "" {
		return nil
	}
	var found *yaml.Node
	for _, part := range strings.Split(key, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			if v, err := strconv.Atoi(part[i+1 : len(part)-1]); err == nil {
				name, idx = part[:i], v
			}
		}
		n = resolve(n)
		if n.Kind != yaml.MappingNode {
			return found
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == name {
				found, next = n.Content[i], resolve(n.Content[i+1])
				break
			}
		}
		if next == nil {
			return found
		}
		if idx >= 0 && next.Kind == yaml.SequenceNode && idx < len(next.Content) {
			found, next = next.Content[idx], next.Content[idx]
		}
		n = next
	}
	return found
}
