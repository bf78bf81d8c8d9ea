// Command kubectl is upstream kubectl (k8s.io/kubectl), built as its own
// binary and packed compressed inside orch, so that importing it costs the
// other orch processes no memory. `orch kubectl` unpacks and runs it.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() { os.Exit(cli.Run(cmd.NewDefaultKubectlCommand())) }
