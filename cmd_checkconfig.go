package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/orch-dev/orch/internal/checkconfig"
)

// checkConfigCommand is `orch check-config`: the kernel and system features
// orch needs, as a table; the exit status is 1 when a required one fails.
func checkConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "check-config",
		Usage: "check that this machine's kernel and system have what orch needs",
		Description: "Probes (as root, in a scratch network namespace) and reads the kernel configuration for\n" +
			"namespaces, cgroups, overlayfs, veth/bridge/VXLAN, nf_tables and its expressions, seccomp,\n" +
			"sysctls, swap and free ports. Exits 1 when a required check fails.",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "port", Usage: "port orch will listen on, as NUMBER/PROTO (default: 6443/tcp and 8472/udp); 'none' skips the port checks"},
			&cli.BoolFlag{Name: "no-probe", Usage: "do not create a scratch network namespace; read the kernel configuration only"},
		},
		Action: func(c *cli.Context) error {
			ports, err := parsePorts(c.StringSlice("port"))
			if err != nil {
				return err
			}
			r := checkconfig.Check(c.Context, checkconfig.Config{Ports: ports, NoProbe: c.Bool("no-probe")})
			if err := r.WriteTable(c.App.Writer); err != nil {
				return err
			}
			if r.Failed() {
				return cli.Exit("", 1)
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
