package connector

// PublicCredentialNames names the credentials whose values are addresses,
// settings or public certificates (a CA's, a client's: the server sees it)
// rather than secrets. The broker does not redact them from logged
// errors (they help the reader), except the password of a value that is a
// URL with one, and sdk/connectortest does not report them when they appear
// in errors, logs or client bytes. Every other credential is treated as a
// secret.
var PublicCredentialNames = []string{
	"host", "port", "username", "user", "database", "dbname",
	"sslmode", "sslhost", "sslrootcert", "sslcert", "address", "url", "endpoint", "region",
}

// MinSecretLen is the shortest credential value the broker and the test kit
// search for in text to redact or report it: shorter values would match
// ordinary words (and such a short secret is no secret anyway).
const MinSecretLen = 4
