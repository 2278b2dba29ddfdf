module github.com/secretless-broker/secretless-broker

go 1.26

require github.com/secretless-broker/secretless-broker/sdk v0.0.0

require go.yaml.in/yaml/v3 v3.0.6 // indirect

replace github.com/secretless-broker/secretless-broker/sdk => ./sdk
