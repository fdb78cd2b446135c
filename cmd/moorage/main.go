// Command moorage is Kubernetes' storage system as one binary: see README.md.
package main

import (
	"os"

	"github.com/moorage/moorage/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
