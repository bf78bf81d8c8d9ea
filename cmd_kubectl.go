package main

import (
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/orch-dev/orch/internal/kubectl"
)

// defaultKubeconfig is where `orch server` writes the admin kubeconfig.
const defaultKubeconfig = "/etc/orch/orch.yaml"

func kubectlCommand() *cli.Command {
	return &cli.Command{
		Name:            "kubectl",
		Usage:           "run upstream kubectl against this cluster (KUBECONFIG defaults to " + defaultKubeconfig + ")",
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			dataDir := os.Getenv("ORCH_DATA_DIR")
			if dataDir == "" {
				dataDir = "/var/lib/orch"
			}
			dirs := []string{filepath.Join(dataDir, "data", "bin")}
			if cache, err := os.UserCacheDir(); err == nil {
				dirs = append(dirs, filepath.Join(cache, "orch", "bin"))
			}
			dirs = append(dirs, filepath.Join(os.TempDir(), "orch-"+user()+"-bin"))
			return kubectl.Exec(c.Args().Slice(), dirs, defaultKubeconfig)
		},
	}
}

func user() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "uid" + itoa(os.Getuid())
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for i > 0 {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
	}
	return string(b)
}
