package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"k8s.io/klog/v2"

	"github.com/orch-dev/orch/server"
)

func envs(name string) []string {
	return []string{"ORCH_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
}

func serverFlags() []cli.Flag {
	return []cli.Flag{
		configFlag(),
		&cli.StringFlag{Name: "data-dir", Aliases: []string{"d"}, Value: "/var/lib/orch", EnvVars: envs("data-dir"), Usage: "folder for state"},
		&cli.StringFlag{Name: "bind-address", EnvVars: envs("bind-address"), Usage: "address the API server listens on (default: all)"},
		&cli.IntFlag{Name: "https-listen-port", Value: 6443, EnvVars: envs("https-listen-port"), Usage: "HTTPS port of the API server"},
		&cli.StringFlag{Name: "advertise-address", EnvVars: envs("advertise-address"), Usage: "address agents and the kubernetes Service use to reach the API server (default: node IP)"},
		&cli.StringFlag{Name: "node-name", EnvVars: envs("node-name"), Usage: "node name (default: hostname)"},
		&cli.StringSliceFlag{Name: "node-ip", EnvVars: envs("node-ip"), Usage: "IP address of the node"},
		&cli.StringFlag{Name: "token", Aliases: []string{"t"}, EnvVars: envs("token"), Usage: "shared secret agents join with (default: generated, in <data-dir>/server/token)"},
		&cli.StringFlag{Name: "write-kubeconfig", Aliases: []string{"o"}, Value: defaultKubeconfig, EnvVars: envs("write-kubeconfig"), Usage: "where to write the admin kubeconfig"},
		&cli.StringFlag{Name: "write-kubeconfig-mode", Value: "0600", EnvVars: envs("write-kubeconfig-mode"), Usage: "file mode of the admin kubeconfig"},
		&cli.StringFlag{Name: "cluster-cidr", Value: "10.42.0.0/16", EnvVars: envs("cluster-cidr"), Usage: "pod IP range"},
		&cli.StringFlag{Name: "service-cidr", Value: "10.43.0.0/16", EnvVars: envs("service-cidr"), Usage: "Service cluster IP range"},
		&cli.StringFlag{Name: "cluster-dns", Value: "10.43.0.10", EnvVars: envs("cluster-dns"), Usage: "cluster DNS address"},
		&cli.StringFlag{Name: "service-node-port-range", Value: "30000-32767", EnvVars: envs("service-node-port-range"), Usage: "NodePort range"},
		&cli.StringSliceFlag{Name: "tls-san", EnvVars: envs("tls-san"), Usage: "extra host names or IPs in the serving certificate"},
		&cli.BoolFlag{Name: "disable-agent", EnvVars: envs("disable-agent"), Usage: "run the control plane only, no workloads on this machine"},
		&cli.StringFlag{Name: "cgroup-root", Value: "/orch", EnvVars: envs("cgroup-root"), Usage: "cgroup parent of the pods"},
		&cli.Int64Flag{Name: "default-not-ready-toleration-seconds", Value: 300, EnvVars: envs("default-not-ready-toleration-seconds"), Usage: "tolerationSeconds of the not-ready NoExecute toleration every pod gets"},
		&cli.Int64Flag{Name: "default-unreachable-toleration-seconds", Value: 300, EnvVars: envs("default-unreachable-toleration-seconds"), Usage: "tolerationSeconds of the unreachable NoExecute toleration every pod gets (how long pods of a lost node wait before they are replaced)"},
		&cli.StringFlag{Name: "resolv-conf", Value: "/etc/resolv.conf", EnvVars: envs("resolv-conf"), Usage: "upstream resolvers of cluster DNS and of dnsPolicy Default pods"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: envs("log-level"), Usage: "debug, info, warn or error"},
		&cli.BoolFlag{Name: "enable-pprof", EnvVars: envs("enable-pprof"), Usage: "serve Go profiles under /debug/pprof/ on the API port (administrators only)"},
	}
}

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:   "server",
		Usage:  "run the control plane (and, unless --disable-agent, workloads)",
		Flags:  serverFlags(),
		Before: loadConfigFile,
		Action: func(c *cli.Context) error {
			log, err := newLogger(c.String("log-level"))
			if err != nil {
				return err
			}
			cfg, err := serverConfig(c)
			if err != nil {
				return err
			}
			srv, err := server.New(cfg, log)
			if err != nil {
				return err
			}
			return srv.Run(c.Context)
		},
	}
}

func serverConfig(c *cli.Context) (server.Config, error) {
	cfg := server.Config{
		DataDir:                      c.String("data-dir"),
		HTTPSPort:                    c.Int("https-listen-port"),
		NodeName:                     c.String("node-name"),
		Token:                        c.String("token"),
		WriteKubeconfig:              c.String("write-kubeconfig"),
		TLSSANs:                      c.StringSlice("tls-san"),
		Version:                      version,
		DisableAgent:                 c.Bool("disable-agent"),
		EnablePprof:                  c.Bool("enable-pprof"),
		CgroupRoot:                   c.String("cgroup-root"),
		ResolvConf:                   c.String("resolv-conf"),
		NotReadyTolerationSeconds:    c.Int64("default-not-ready-toleration-seconds"),
		UnreachableTolerationSeconds: c.Int64("default-unreachable-toleration-seconds"),
	}
	var err error
	if cfg.BindAddress, err = optAddr(c, "bind-address"); err != nil {
		return cfg, err
	}
	if cfg.AdvertiseAddress, err = optAddr(c, "advertise-address"); err != nil {
		return cfg, err
	}
	for _, s := range c.StringSlice("node-ip") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return cfg, fmt.Errorf("--node-ip %q: %w", s, err)
		}
		cfg.NodeIPs = append(cfg.NodeIPs, a)
	}
	if cfg.ClusterCIDR, err = prefix(c, "cluster-cidr"); err != nil {
		return cfg, err
	}
	if cfg.ServiceCIDR, err = prefix(c, "service-cidr"); err != nil {
		return cfg, err
	}
	if cfg.ClusterDNS, err = optAddr(c, "cluster-dns"); err != nil {
		return cfg, err
	}
	mode, err := strconv.ParseUint(c.String("write-kubeconfig-mode"), 8, 32)
	if err != nil || mode > 0o777 {
		return cfg, fmt.Errorf("--write-kubeconfig-mode %q is not an octal file mode", c.String("write-kubeconfig-mode"))
	}
	cfg.WriteKubeconfigMode = os.FileMode(mode)
	lo, hi, ok := strings.Cut(c.String("service-node-port-range"), "-")
	if cfg.NodePortMin, err = strconv.Atoi(lo); ok && err == nil {
		cfg.NodePortMax, err = strconv.Atoi(hi)
	}
	if !ok || err != nil {
		return cfg, fmt.Errorf("--service-node-port-range %q is not a range like 30000-32767", c.String("service-node-port-range"))
	}
	if cfg.NodeName == "" {
		if cfg.NodeName, err = os.Hostname(); err != nil {
			return cfg, fmt.Errorf("node name: %w", err)
		}
	}
	cfg.NodeName = strings.ToLower(cfg.NodeName)
	return cfg, cfg.Validate()
}

func optAddr(c *cli.Context, name string) (netip.Addr, error) {
	s := c.String(name)
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("--%s %q: %w", name, s, err)
	}
	return a, nil
}

func prefix(c *cli.Context, name string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(c.String(name))
	if err != nil {
		return p, fmt.Errorf("--%s %q: %w", name, c.String(name), err)
	}
	if p != p.Masked() {
		return p, fmt.Errorf("--%s %q has host bits set (did you mean %s?)", name, c.String(name), p.Masked())
	}
	return p, nil
}

// newLogger returns the process's logger; the libraries that log through
// klog (client-go's reflectors) are routed into it too.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	log := slog.New(routineHandler{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})})
	klog.SetSlogLogger(log)
	return log, nil
}
