package connector

// CredentialsValidator may be implemented by a TCP or HTTP Plugin (the value
// returned by GetTCPPlugin or GetHTTPPlugin) to check, at start-up and on
// every reload, the credentials a service declares, so that a missing or
// malformed credential stops the broker instead of failing the first
// connection.
//
// config is the service's config block (as given to NewConnector), so that
// a connector can check references from its config to credentials. names
// lists every credential the service declares. literal holds the
// values written in the config file itself (bare scalars); credentials that a
// provider fetches per connection are absent from literal, since their value
// is not known yet. The error text is shown to the operator with the
// service's name; it must not contain credential values. Each line of it is
// one problem, and a line of the form "credential NAME: message" is shown
// at that credential's line in the file.
type CredentialsValidator interface {
	ValidateCredentials(config []byte, names []string, literal CredentialValuesByID) error
}
