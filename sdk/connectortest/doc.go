// Package connectortest runs a connector inside an ordinary "go test", the
// way the broker runs it, without building a plugin: it checks the
// plugin's PluginInfo map, calls ValidateConfig, ValidateCredentials and
// NewConnector with the service's config block, hands each connection or request fresh copies of
// the credentials, zeroes them as soon as Connect returns, and (for TCP)
// relays bytes between a client connection and the target connection that
// Connect returned, against a target the test names (a real server, or one
// the test starts).
//
// It also checks the connector contract and reports every breach with
// t.Errorf, prefixed "connectortest: contract:":
//
//   - ValidateConfig, ValidateCredentials, NewConnector, Connect and Refuse
//     return errors (or nothing); they do not panic. NewConnector does not
//     return nil.
//   - A TCP Connect returns a usable connection (not nil, not closed, not
//     the client connection) or an error, and leaves the client connection
//     open when it succeeds.
//   - No credential value reaches an error message, a log message, or the
//     bytes a TCP connector writes to the client. Values shorter than
//     MinSecretLen, and the credentials named in PublicCredentials (host,
//     port, username, ...), are not checked.
//   - An HTTP Connect changes only the request it was given: the incoming
//     request it was cloned from and the requests decorated earlier stay as
//     they were, and at most one Authorization header is left, with the
//     target URL intact. CheckConcurrent also runs Connect on several
//     requests at once and checks that no request carries another's
//     credentials.
//
// Whether a connector keeps credentials after Connect returns cannot be seen
// from outside, but its effect can: the kit zeroes the values exactly when
// the broker does, before a single byte is relayed or a request is sent, so
// a connector that kept a slice sends zeros to the target and the test's
// own check of the target's answer fails.
//
// A connector's returned errors are not contract breaches: Connect returns
// them to the test, which checks them like any other result.
//
// A TCP connector's test, in the plugin's own package:
//
//	func TestConnect(t *testing.T) {
//		addr := startMyServer(t) // the target: a real server or a fake
//		k, err := connectortest.LoadTCP(t, GetTCPPlugin(), connectortest.Options{Info: PluginInfo()})
//		if err != nil {
//			t.Fatal(err)
//		}
//		client, err := k.Connect(t, connectortest.Credentials{"address": addr, "password": "s3cret"})
//		if err != nil {
//			t.Fatal(err)
//		}
//		// Speak the protocol on client as the application would; the
//		// target sees an authenticated connection.
//	}
//
// An HTTP connector's test sends a request to a target such as an
// httptest.Server with HTTP.Do, or inspects the decorated request returned
// by HTTP.Decorate.
//
// The package depends on the standard library and the SDK only.
package connectortest
