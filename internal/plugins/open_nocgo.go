//go:build !cgo

package plugins

import "errors"

// CgoEnabled reports whether this broker was built with cgo, without which
// Go plugins cannot be loaded.
var CgoEnabled = false

func openLibrary(string) (library, error) {
	return nil, errors.New("this broker was built without cgo and cannot load plugins")
}
