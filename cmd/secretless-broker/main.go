// Command secretless-broker lets applications reach databases and other
// services without holding their secrets. Run "secretless-broker -help".
package main

import (
	"os"

	"github.com/secretless-broker/secretless-broker/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
