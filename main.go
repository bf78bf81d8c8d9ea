// Command orch runs a Kubernetes-style cluster from one binary: `orch server`
// runs the control plane (and by default workloads), `orch agent` joins more
// machines. See README.md and DESIGN.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/orch-dev/orch/internal/cli"
)

// version is stamped by the Makefile with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// When libcontainer re-executes orch as a container's init, this
	// becomes that init and never returns.
	runtimeInitHook()
	args := os.Args[1:]
	// Installed as a `kubectl` symlink, orch is kubectl.
	if filepath.Base(os.Args[0]) == "kubectl" {
		args = append([]string{"kubectl"}, args...)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args (without the program's name) and returns
// the exit status: 0, or 1 after printing the error to stderr (a command
// that asks for another status with cli.ExitError has printed its own).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := newApp(stdout, stderr).Run(ctx, args)
	if err == nil {
		return 0
	}
	var exit cli.ExitError
	if errors.As(err, &exit) {
		return exit.Code
	}
	fmt.Fprintln(stderr, "orch:", err)
	return 1
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:    "orch",
		Usage:   "a lean Kubernetes-compatible cluster in one binary",
		Version: version,
		Stdout:  stdout,
		Commands: []*cli.Command{
			serverCommand(),
			agentCommand(),
			checkConfigCommand(stdout),
			imageCommand(stdout, stderr),
			kubectlCommand(),
			versionCommand(stdout),
		},
	}
}

func versionCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the orch version",
		Action: func(context.Context, []string) error {
			_, err := fmt.Fprintf(stdout, "orch version %s\n", version)
			return err
		},
	}
}
