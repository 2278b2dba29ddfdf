// Package providers fetches credential values for services. A provider maps
// an id (the "get" of a credential) to a secret value; the built-in ones are
// literal, env and file. Values are fetched for every connection so that a
// rotated secret takes effect without a restart, and are returned as fresh
// []byte slices the caller owns and zeroes.
package providers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/config"
	"github.com/secretless-broker/secretless-broker/sdk/connector"
)

// Provider fetches one credential value. Get must honour ctx and return a
// slice the caller may zero. Errors must not contain the secret value.
type Provider interface {
	Name() string
	// NeedsID reports whether credentials from this provider must have a "get".
	NeedsID() bool
	Get(ctx context.Context, id string) ([]byte, error)
}

// Registry is a set of providers by name. It implements config.ProviderInfo.
type Registry map[string]Provider

// Default returns the built-in providers.
func Default() Registry {
	r := Registry{}
	for _, p := range []Provider{Literal{}, Env{}, File{}} {
		r[p.Name()] = p
	}
	return r
}

// Known reports whether a provider exists.
func (r Registry) Known(name string) bool { _, ok := r[name]; return ok }

// NeedsID reports whether the named provider needs a "get" id.
func (r Registry) NeedsID(name string) bool { p, ok := r[name]; return ok && p.NeedsID() }

// Names lists the provider names, sorted.
func (r Registry) Names() []string {
	out := make([]string, 0, len(r))
	for n := range r {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Checker is an optional interface of a Provider: Check tells at load time
// that id cannot be fetched. It must not fetch the secret itself.
type Checker interface {
	Check(id string) error
}

// Peeker is an optional interface of a Provider whose values can be read at
// load time without side effects (a local source, such as the environment or
// a file): the broker reads them then only so that connectors can check
// them as they check values written in the file, and zeroes them after.
// Connections still fetch the value anew.
type Peeker interface {
	Peek(id string) ([]byte, error)
}

// LoadValue is c's value as it is at load time when its provider is a
// Peeker, for load-time checks only; false when the provider cannot tell it
// then (or fails, which its Checker reports). The caller zeroes the value.
func (r Registry) LoadValue(c config.Credential) ([]byte, bool) {
	p, ok := r[c.From].(Peeker)
	if !ok {
		return nil, false
	}
	v, err := p.Peek(c.Get)
	if err != nil {
		return nil, false
	}
	return v, true
}

// CheckID implements config.IDChecker with the provider's Checker, if any.
func (r Registry) CheckID(provider, id string) error {
	if ch, ok := r[provider].(Checker); ok {
		return ch.Check(id)
	}
	return nil
}

// Fetch resolves all of a service's credentials. On error every value already
// fetched is zeroed. The error names the credential and provider, never a value.
func (r Registry) Fetch(ctx context.Context, creds []config.Credential) (connector.CredentialValuesByID, error) {
	return r.FetchObserved(ctx, creds, nil)
}

// Observer is told how long each provider call took and whether it failed.
type Observer func(provider string, d time.Duration, err error)

// FetchObserved is Fetch, reporting each provider call to obs (which may be nil).
func (r Registry) FetchObserved(ctx context.Context, creds []config.Credential, obs Observer) (connector.CredentialValuesByID, error) {
	out := make(connector.CredentialValuesByID, len(creds))
	for _, c := range creds {
		p, ok := r[c.From]
		if !ok {
			out.Zero()
			return nil, fmt.Errorf("credential %q: unknown provider %q", c.Name, c.From)
		}
		start := time.Now()
		v, err := p.Get(ctx, c.Get)
		if obs != nil {
			obs(c.From, time.Since(start), err)
		}
		if err != nil {
			out.Zero()
			return nil, fmt.Errorf("credential %q from %s: %w", c.Name, c.From, err)
		}
		out[c.Name] = v
	}
	return out, nil
}

// Literal returns the id itself: the value written in the config file.
type Literal struct{}

// Name implements Provider.
func (Literal) Name() string { return "literal" }

// NeedsID implements Provider.
func (Literal) NeedsID() bool { return true }

// Get implements Provider.
func (Literal) Get(_ context.Context, id string) ([]byte, error) { return []byte(id), nil }

// Peek implements Peeker.
func (l Literal) Peek(id string) ([]byte, error) { return l.Get(context.Background(), id) }

// ErrEnvNotSet is returned when an env credential's variable is not set.
var ErrEnvNotSet = errors.New("environment variable is not set")

// Env reads an environment variable. A variable that is set but empty is an
// empty value; one that is not set is an error naming it.
type Env struct{}

// Name implements Provider.
func (Env) Name() string { return "env" }

// NeedsID implements Provider.
func (Env) NeedsID() bool { return true }

// Get implements Provider.
func (Env) Get(_ context.Context, id string) ([]byte, error) {
	v, ok := os.LookupEnv(id)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrEnvNotSet, id)
	}
	return []byte(v), nil
}

// Peek implements Peeker.
func (e Env) Peek(id string) ([]byte, error) { return e.Get(context.Background(), id) }

// Check implements Checker: the variable must be set. The process
// environment does not change from outside, so a variable missing at load
// time would fail every connection.
func (Env) Check(id string) error {
	if _, ok := os.LookupEnv(id); !ok {
		return fmt.Errorf("%w: %s", ErrEnvNotSet, id)
	}
	return nil
}

// MaxFileSize is the largest credential file the file provider reads.
const MaxFileSize = 1 << 20

// ErrNotRegular is returned for a credential path that is not a regular
// file (a fifo or device could block or never end).
var ErrNotRegular = errors.New("not a regular file")

// File returns the exact contents of a file (no trimming of newlines). Only
// regular files up to MaxFileSize are read, so a path naming a fifo, a device
// such as /dev/zero or a huge file fails that connection instead of blocking
// or exhausting memory.
type File struct{}

// Name implements Provider.
func (File) Name() string { return "file" }

// NeedsID implements Provider.
func (File) NeedsID() bool { return true }

// Get implements Provider.
func (File) Get(ctx context.Context, id string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(id, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read %s%s: %w", id, relNote(id), unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s%s: %w", id, relNote(id), unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: %w (%s)", id, ErrNotRegular, st.Mode().Type())
	}
	if st.Size() > MaxFileSize {
		return nil, fmt.Errorf("read %s: file is larger than %d bytes", id, MaxFileSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("read %s%s: %w", id, relNote(id), unwrapPath(err))
	}
	if len(b) > MaxFileSize {
		clear(b)
		return nil, fmt.Errorf("read %s: file is larger than %d bytes", id, MaxFileSize)
	}
	return b, nil
}

// Peek implements Peeker.
func (f File) Peek(id string) ([]byte, error) { return f.Get(context.Background(), id) }

// Check implements Checker: the file must exist, be a regular file no
// larger than MaxFileSize, and be readable by the broker (it is opened and
// closed, not read). It is still read anew for every connection.
func (File) Check(id string) error {
	st, err := os.Stat(id)
	if err != nil {
		return fmt.Errorf("read %s%s: %w", id, relNote(id), unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("read %s: %w (%s)", id, ErrNotRegular, st.Mode().Type())
	}
	if st.Size() > MaxFileSize {
		return fmt.Errorf("read %s: file is larger than %d bytes", id, MaxFileSize)
	}
	f, err := os.OpenFile(id, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("read %s%s: %w", id, relNote(id), unwrapPath(err))
	}
	return f.Close()
}

// relNote says where a relative path is read from, for error messages.
func relNote(path string) string {
	if filepath.IsAbs(path) {
		return ""
	}
	if wd, err := os.Getwd(); err == nil {
		return " (relative to the working directory " + wd + ")"
	}
	return " (relative to the working directory)"
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var (
	_ Provider            = Literal{}
	_ Provider            = Env{}
	_ Provider            = File{}
	_ config.ProviderInfo = Registry(nil)
	_ config.IDChecker    = Registry(nil)
	_ Checker             = Env{}
	_ Checker             = File{}
	_ Peeker              = Literal{}
	_ Peeker              = Env{}
	_ Peeker              = File{}
)
