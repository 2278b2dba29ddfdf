module github.com/secretless-broker/secretless-broker/sdk

go 1.26
