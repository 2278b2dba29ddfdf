// Package sdk holds the constants shared by the broker and its connector
// plugins: the plugin API version and the keys and values of the map a plugin
// returns from its PluginInfo symbol.
//
// The SDK is the only public Go API of secretless-broker. It depends on the Go
// standard library alone, so that a plugin shares as few packages as possible
// with the broker binary that loads it (every shared package must be
// byte-identical on both sides for plugin.Open to succeed).
//
// A plugin is a Go "package main" built with
//
//	go build -buildmode=plugin -o=/path/to/plugins/my-plugin.so /path/to/my/plugin/files/
//
// that exports PluginInfo and, depending on its type, GetTCPPlugin or
// GetHTTPPlugin:
//
//	func PluginInfo() map[string]string
//	func GetTCPPlugin() tcp.Plugin   // when PluginInfo()["type"] == "connector.tcp"
//	func GetHTTPPlugin() http.Plugin // when PluginInfo()["type"] == "connector.http"
//
// See the packages connector, connector/tcp, connector/http and log, and
// connectortest for testing a connector without building a plugin. The
// broker prints what a plugin build must match with
// "secretless-broker plugins env", and builds plugins that match with
// "secretless-broker plugins build"; docs/plugins in the repository explains
// both.
package sdk

// PluginAPIVersion is the plugin API version this SDK implements. A plugin's
// PluginInfo()[KeyPluginAPIVersion] must equal one of SupportedPluginAPIVersions.
const PluginAPIVersion = "0.1.0"

// SupportedPluginAPIVersions lists every plugin API version the broker accepts.
var SupportedPluginAPIVersions = []string{PluginAPIVersion}

// Keys of the map returned by a plugin's PluginInfo function. All are required.
const (
	// KeyPluginAPIVersion names the plugin API version the plugin was written for.
	KeyPluginAPIVersion = "pluginAPIVersion"
	// KeyType is the plugin type: TypeTCPConnector or TypeHTTPConnector.
	KeyType = "type"
	// KeyID is the connector id that services name in their "connector" key.
	// It must match ^[a-z0-9_:.-]+$ and not collide with a built-in connector.
	KeyID = "id"
	// KeyDescription is a short human-readable description.
	KeyDescription = "description"
)

// Plugin types, the values of PluginInfo()[KeyType].
const (
	// TypeTCPConnector marks a plugin exporting GetTCPPlugin.
	TypeTCPConnector = "connector.tcp"
	// TypeHTTPConnector marks a plugin exporting GetHTTPPlugin.
	TypeHTTPConnector = "connector.http"
)

// Names of the symbols the broker looks up in a plugin.
const (
	SymbolPluginInfo    = "PluginInfo"
	SymbolGetTCPPlugin  = "GetTCPPlugin"
	SymbolGetHTTPPlugin = "GetHTTPPlugin"
)
