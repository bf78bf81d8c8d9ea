// Command orch runs a Kubernetes-style cluster from one binary: `orch server`
// runs the control plane (and by default workloads), `orch agent` joins more
// machines. See README.md and DESIGN.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is stamped by the Makefile with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// When libcontainer re-executes orch as a container's init, this
	// becomes that init and never returns.
	runtimeInitHook()
	// Installed as a `kubectl` symlink, orch is kubectl.
	if filepath.Base(os.Args[0]) == "kubectl" {
		os.Args = append([]string{os.Args[0], "kubectl"}, os.Args[1:]...)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "orch:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "orch",
		Usage:   "a lean Kubernetes-compatible cluster in one binary",
		Version: version,
		Commands: []*cli.Command{
			serverCommand(),
			agentCommand(),
			checkConfigCommand(),
			imageCommand(),
			kubectlCommand(),
			versionCommand(),
		},
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the orch version",
		Action: func(c *cli.Context) error {
			_, err := fmt.Fprintf(c.App.Writer, "orch version %s\n", version)
			return err
		},
	}
}
