module example.com/mytcpconnector

go 1.26

require github.com/secretless-broker/secretless-broker/sdk v0.0.0

// Point this at the sdk directory of the secretless-broker checkout the broker
// was built from ("secretless-broker plugins env" prints the exact line):
//   go mod edit -replace=github.com/secretless-broker/secretless-broker/sdk=/abs/path/to/secretless-broker/sdk
replace github.com/secretless-broker/secretless-broker/sdk => ../../../sdk
