package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"

	"github.com/orch-dev/orch/internal/cli"
	"github.com/orch-dev/orch/internal/kubectl"
)

// defaultKubeconfig is where `orch server` writes the admin kubeconfig.
const defaultKubeconfig = "/etc/orch/orch.yaml"

// kubectlCommand is `orch kubectl ARGS...`: upstream kubectl, given ARGS
// untouched.
func kubectlCommand() *cli.Command {
	return &cli.Command{
		Name:      "kubectl",
		Usage:     "run upstream kubectl against this cluster (KUBECONFIG defaults to " + defaultKubeconfig + ")",
		ArgsUsage: "KUBECTL-ARGS...",
		Raw:       true,
		Action: func(_ context.Context, args []string) error {
			dataDir := os.Getenv("ORCH_DATA_DIR")
			if dataDir == "" {
				dataDir = "/var/lib/orch"
			}
			dirs := []string{filepath.Join(dataDir, "data", "bin")}
			if cache, err := os.UserCacheDir(); err == nil {
				dirs = append(dirs, filepath.Join(cache, "orch", "bin"))
			}
			dirs = append(dirs, filepath.Join(os.TempDir(), "orch-"+user()+"-bin"))
			return kubectl.Exec(args, dirs, defaultKubeconfig)
		},
	}
}

func user() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "uid" + strconv.Itoa(os.Getuid())
}
