package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/orch-dev/orch/internal/checkconfig"
	"github.com/orch-dev/orch/internal/cli"
)

// checkConfigCommand is `orch check-config`: the kernel and system features
// orch needs, as a table on stdout; the exit status is 1 when a required
// one fails.
func checkConfigCommand(stdout io.Writer) *cli.Command {
	var ports []string
	var noProbe bool
	return &cli.Command{
		Name:  "check-config",
		Usage: "check that this machine's kernel and system have what orch needs",
		Description: "Probes (as root, in a scratch network namespace) and reads the kernel configuration for\n" +
			"namespaces, cgroups, overlayfs, veth/bridge/VXLAN, nf_tables and its expressions, seccomp,\n" +
			"sysctls, swap and free ports. Exits 1 when a required check fails.",
		Flags: []*cli.Flag{
			{Name: "port", Value: cli.Strings(&ports, nil), Usage: "port orch will listen on, as NUMBER/PROTO (default: 6443/tcp and 8472/udp); 'none' skips the port checks"},
			{Name: "no-probe", Value: cli.Bool(&noProbe, false), Usage: "do not create a scratch network namespace; read the kernel configuration only"},
		},
		Action: func(ctx context.Context, _ []string) error {
			ps, err := parsePorts(ports)
			if err != nil {
				return err
			}
			r := checkconfig.Check(ctx, checkconfig.Config{Ports: ps, NoProbe: noProbe})
			if err := r.WriteTable(stdout); err != nil {
				return err
			}
			if r.Failed() {
				return cli.ExitError{Code: 1}
			}
			return nil
		},
	}
}

// parsePorts parses --port values; nil means the defaults.
func parsePorts(vals []string) ([]checkconfig.Port, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	ports := []checkconfig.Port{}
	for _, v := range vals {
		if v == "none" {
			continue
		}
		num, proto, ok := strings.Cut(v, "/")
		if !ok {
			proto = "tcp"
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > 65535 || (proto != "tcp" && proto != "udp") {
			return nil, fmt.Errorf("--port %q: want NUMBER/tcp or NUMBER/udp", v)
		}
		ports = append(ports, checkconfig.Port{Number: n, Proto: proto, Use: "--port"})
	}
	return ports, nil
}
