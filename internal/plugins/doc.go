// Package plugins finds, verifies and loads the broker's connector plugins:
// Go shared objects built with "go build -buildmode=plugin" that export
// PluginInfo and GetTCPPlugin or GetHTTPPlugin (see package sdk).
//
// Loading fails closed. Every entry of the plugin directory counts; with a
// checksum file (sha256sum format) the plugin files and the file's entries
// must be the same set with the same digests. Before any plugin code runs,
// every file is checked to be a Go plugin (debug/elf, debug/buildinfo) whose
// package fingerprints match the running broker and the other plugins, so
// that plugin.Open cannot fail or crash the process halfway. Only then are
// the exact verified bytes opened, from a private copy. Any problem refuses
// all plugins.
package plugins
