package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"k8s.io/klog/v2"

	"github.com/orch-dev/orch/internal/cli"
	"github.com/orch-dev/orch/server"
)

func envs(name string) []string {
	return []string{"ORCH_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
}

// serverOptions are `orch server`'s flags.
type serverOptions struct {
	config, dataDir, bindAddress, advertiseAddress, nodeName, token string
	writeKubeconfig, writeKubeconfigMode, clusterCIDR, serviceCIDR  string
	clusterDNS, nodePortRange, cgroupRoot, resolvConf, logLevel     string
	httpsPort                                                       int
	nodeIPs, tlsSANs, nodeLabels, nodeTaints                        []string
	disableAgent, enablePprof, disablePodFastPath                   bool
	notReadyTolerationSeconds, unreachableTolerationSeconds         int64
}

func (o *serverOptions) flags() []*cli.Flag {
	return []*cli.Flag{
		configFlag(&o.config),
		{Name: "data-dir", Aliases: []string{"d"}, Value: cli.String(&o.dataDir, "/var/lib/orch"), Env: envs("data-dir"), Usage: "folder for state"},
		{Name: "bind-address", Value: cli.String(&o.bindAddress, ""), Env: envs("bind-address"), Usage: "address the API server listens on (default: all)"},
		{Name: "https-listen-port", Value: cli.Int(&o.httpsPort, 6443), Env: envs("https-listen-port"), Usage: "HTTPS port of the API server"},
		{Name: "advertise-address", Value: cli.String(&o.advertiseAddress, ""), Env: envs("advertise-address"), Usage: "address agents and the kubernetes Service use to reach the API server (default: node IP)"},
		{Name: "node-name", Value: cli.String(&o.nodeName, ""), Env: envs("node-name"), Usage: "node name (default: hostname)"},
		{Name: "node-ip", Value: cli.Strings(&o.nodeIPs, nil), Env: envs("node-ip"), Usage: "IP address of the node"},
		{Name: "node-label", Value: cli.Strings(&o.nodeLabels, nil), Env: envs("node-label"), Usage: "label k=v added to this machine's Node at registration (unless --disable-agent)"},
		{Name: "node-taint", Value: cli.Strings(&o.nodeTaints, nil), Env: envs("node-taint"), Usage: "taint k=v:Effect added to this machine's Node at registration (unless --disable-agent)"},
		{Name: "token", Aliases: []string{"t"}, Value: cli.String(&o.token, ""), Env: envs("token"), Usage: "shared secret agents join with (default: generated, in <data-dir>/server/token)"},
		{Name: "write-kubeconfig", Aliases: []string{"o"}, Value: cli.String(&o.writeKubeconfig, defaultKubeconfig), Env: envs("write-kubeconfig"), Usage: "where to write the admin kubeconfig"},
		{Name: "write-kubeconfig-mode", Value: cli.String(&o.writeKubeconfigMode, "0600"), Env: envs("write-kubeconfig-mode"), Usage: "file mode of the admin kubeconfig"},
		{Name: "cluster-cidr", Value: cli.String(&o.clusterCIDR, "10.42.0.0/16"), Env: envs("cluster-cidr"), Usage: "pod IP range"},
		{Name: "service-cidr", Value: cli.String(&o.serviceCIDR, "10.43.0.0/16"), Env: envs("service-cidr"), Usage: "Service cluster IP range"},
		{Name: "cluster-dns", Value: cli.String(&o.clusterDNS, "10.43.0.10"), Env: envs("cluster-dns"), Usage: "cluster DNS address"},
		{Name: "service-node-port-range", Value: cli.String(&o.nodePortRange, "30000-32767"), Env: envs("service-node-port-range"), Usage: "NodePort range"},
		{Name: "tls-san", Value: cli.Strings(&o.tlsSANs, nil), Env: envs("tls-san"), Usage: "extra host names or IPs in the serving certificate"},
		{Name: "disable-agent", Value: cli.Bool(&o.disableAgent, false), Env: envs("disable-agent"), Usage: "run the control plane only, no workloads on this machine"},
		{Name: "disable-pod-fast-path", Value: cli.Bool(&o.disablePodFastPath, false), Env: envs("disable-pod-fast-path"), Usage: "keep pod traffic on the kernel's normal forwarding path (no eBPF fast path between pods and the VXLAN overlay)"},
		{Name: "cgroup-root", Value: cli.String(&o.cgroupRoot, "/orch"), Env: envs("cgroup-root"), Usage: "cgroup parent of the pods"},
		{Name: "default-not-ready-toleration-seconds", Value: cli.Int64(&o.notReadyTolerationSeconds, 300), Env: envs("default-not-ready-toleration-seconds"), Usage: "tolerationSeconds of the not-ready NoExecute toleration every pod gets"},
		{Name: "default-unreachable-toleration-seconds", Value: cli.Int64(&o.unreachableTolerationSeconds, 300), Env: envs("default-unreachable-toleration-seconds"), Usage: "tolerationSeconds of the unreachable NoExecute toleration every pod gets (how long pods of a lost node wait before they are replaced)"},
		{Name: "resolv-conf", Value: cli.String(&o.resolvConf, "/etc/resolv.conf"), Env: envs("resolv-conf"), Usage: "upstream resolvers of cluster DNS and of dnsPolicy Default pods"},
		{Name: "log-level", Value: cli.String(&o.logLevel, "info"), Env: envs("log-level"), Usage: "debug, info, warn or error"},
		{Name: "enable-pprof", Value: cli.Bool(&o.enablePprof, false), Env: envs("enable-pprof"), Usage: "serve Go profiles under /debug/pprof/ on the API port (administrators only)"},
	}
}

func serverCommand() *cli.Command {
	o := &serverOptions{}
	return &cli.Command{
		Name:   "server",
		Usage:  "run the control plane (and, unless --disable-agent, workloads)",
		Flags:  o.flags(),
		Before: func(s *cli.Set) error { return loadConfigFile(s, o.config) },
		Action: func(ctx context.Context, _ []string) error {
			log, err := newLogger(o.logLevel)
			if err != nil {
				return err
			}
			cfg, err := serverConfig(o)
			if err != nil {
				return err
			}
			srv, err := server.New(cfg, log)
			if err != nil {
				return err
			}
			return srv.Run(ctx)
		},
	}
}

func serverConfig(o *serverOptions) (server.Config, error) {
	cfg := server.Config{
		DataDir:                      o.dataDir,
		HTTPSPort:                    o.httpsPort,
		NodeName:                     o.nodeName,
		Token:                        o.token,
		WriteKubeconfig:              o.writeKubeconfig,
		TLSSANs:                      o.tlsSANs,
		Version:                      version,
		DisableAgent:                 o.disableAgent,
		DisablePodFastPath:           o.disablePodFastPath,
		EnablePprof:                  o.enablePprof,
		CgroupRoot:                   o.cgroupRoot,
		ResolvConf:                   o.resolvConf,
		NotReadyTolerationSeconds:    o.notReadyTolerationSeconds,
		UnreachableTolerationSeconds: o.unreachableTolerationSeconds,
	}
	var err error
	if cfg.BindAddress, err = optAddr("bind-address", o.bindAddress); err != nil {
		return cfg, err
	}
	if cfg.AdvertiseAddress, err = optAddr("advertise-address", o.advertiseAddress); err != nil {
		return cfg, err
	}
	for _, s := range o.nodeIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return cfg, fmt.Errorf("--node-ip %q: %w", s, err)
		}
		cfg.NodeIPs = append(cfg.NodeIPs, a)
	}
	if cfg.NodeLabels, err = parseLabels(o.nodeLabels); err != nil {
		return cfg, err
	}
	if cfg.NodeTaints, err = parseTaints(o.nodeTaints); err != nil {
		return cfg, err
	}
	if cfg.ClusterCIDR, err = prefix("cluster-cidr", o.clusterCIDR); err != nil {
		return cfg, err
	}
	if cfg.ServiceCIDR, err = prefix("service-cidr", o.serviceCIDR); err != nil {
		return cfg, err
	}
	if cfg.ClusterDNS, err = optAddr("cluster-dns", o.clusterDNS); err != nil {
		return cfg, err
	}
	mode, err := strconv.ParseUint(o.writeKubeconfigMode, 8, 32)
	if err != nil || mode > 0o777 {
		return cfg, fmt.Errorf("--write-kubeconfig-mode %q is not an octal file mode", o.writeKubeconfigMode)
	}
	cfg.WriteKubeconfigMode = os.FileMode(mode)
	lo, hi, ok := strings.Cut(o.nodePortRange, "-")
	if cfg.NodePortMin, err = strconv.Atoi(lo); ok && err == nil {
		cfg.NodePortMax, err = strconv.Atoi(hi)
	}
	if !ok || err != nil {
		return cfg, fmt.Errorf("--service-node-port-range %q is not a range like 30000-32767", o.nodePortRange)
	}
	if cfg.NodeName == "" {
		if cfg.NodeName, err = os.Hostname(); err != nil {
			return cfg, fmt.Errorf("node name: %w", err)
		}
	}
	cfg.NodeName = strings.ToLower(cfg.NodeName)
	return cfg, cfg.Validate()
}

// optAddr parses the address s of flag --name; "" is the zero Addr.
func optAddr(name, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("--%s %q: %w", name, s, err)
	}
	return a, nil
}

// prefix parses the CIDR s of flag --name, which must have no host bits.
func prefix(name, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, fmt.Errorf("--%s %q: %w", name, s, err)
	}
	if p != p.Masked() {
		return p, fmt.Errorf("--%s %q has host bits set (did you mean %s?)", name, s, p.Masked())
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
