//go:build cgo

package plugins

import "plugin"

// CgoEnabled reports whether this broker was built with cgo, without which
// Go plugins cannot be loaded.
var CgoEnabled = true

type goPlugin struct{ p *plugin.Plugin }

func (g goPlugin) Lookup(name string) (any, error) {
	s, err := g.p.Lookup(name)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// openLibrary opens a verified copy with plugin.Open.
func openLibrary(path string) (library, error) {
	p, err := plugin.Open(path)
	if err != nil {
		return nil, err
	}
	return goPlugin{p}, nil
}

var _ library = goPlugin{}
