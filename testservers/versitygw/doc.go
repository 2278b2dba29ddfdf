// Package versitygw pins the versitygw S3 gateway (github.com/versity/versitygw)
// used as a SigV4-verifying S3 peer by the HTTP connector tests. It is its own
// module so that versitygw never becomes a dependency of the broker's module.
//
// Build (the tests do this once per machine, cached by version):
//
//	go build -o "$HOME/.cache/secretless-test/versitygw-v1.8.0/versitygw" github.com/versity/versitygw/cmd/versitygw
package versitygw
