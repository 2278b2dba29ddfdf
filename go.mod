module github.com/secretless-broker/secretless-broker

go 1.26

require github.com/secretless-broker/secretless-broker/sdk v0.0.0

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/pgx/v5 v5.13.0 // indirect
	github.com/lib/pq v1.12.3 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	golang.org/x/text v0.41.0 // indirect
)

replace github.com/secretless-broker/secretless-broker/sdk => ./sdk
