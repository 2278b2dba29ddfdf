package connector

// CredentialsValidator may be implemented by a TCP or HTTP Plugin (the value
// returned by GetTCPPlugin or GetHTTPPlugin) to check, at start-up and on
// every reload, the credentials a service declares, so that a missing or
// malformed credential stops the broker instead of failing the first
// connection.
//
// config is the service's config block (as given to NewConnector), so that
// a connector can check references from its config to credentials. names
// lists every credential the service declares. literal holds the values
// known at load time: those written in the config file itself (bare
// scalars) and those a local provider tells then (env and file, as they are
// at load; connections still fetch them anew). Credentials whose value is
// not known yet (a remote provider's, or a variable or file that cannot be
// read, which the broker reports itself) are absent from literal. The error text is shown to the operator with the
// service's name; it must not contain credential values. Each line of it is
// one problem, and a line of the form "credential NAME: message" is shown
// at that credential's line in the file.
type CredentialsValidator interface {
	ValidateCredentials(config []byte, names []string, literal CredentialValuesByID) error
}
