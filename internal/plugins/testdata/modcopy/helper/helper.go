// Package helper is shared by plugins pa and pb. Copied to two directories
// and built without -trimpath, it gets two different fingerprints.
package helper

// Name returns a constant.
func Name() string { return "helper" }
