package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"

	"github.com/orch-dev/orch/agent"
	"github.com/orch-dev/orch/agent/podnet"
	"github.com/orch-dev/orch/dns"
	"github.com/orch-dev/orch/internal/cli"
	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/netproxy"
	"github.com/orch-dev/orch/server/tunnel"
)

// agentOptions are `orch agent`'s flags.
type agentOptions struct {
	config, server, token, tokenFile, dataDir, nodeName, cgroupRoot string
	clusterCIDR, flannelBackend, clusterDNS, resolvConf             string
	clusterDomain, privateRegistry, logLevel                        string
	nodeIPs, nodeLabels, nodeTaints                                 []string
	disablePodFastPath                                              bool
}

func (o *agentOptions) flags() []*cli.Flag {
	return []*cli.Flag{
		configFlag(&o.config),
		{Name: "server", Aliases: []string{"s"}, Value: cli.String(&o.server, ""), Env: []string{"ORCH_URL"}, Usage: "server to join, https://HOST:6443"},
		{Name: "token", Aliases: []string{"t"}, Value: cli.String(&o.token, ""), Env: envs("token"), Usage: "join token (K10<ca-hash>::server:<secret>)"},
		{Name: "token-file", Value: cli.String(&o.tokenFile, ""), Env: envs("token-file"), Usage: "file holding the join token"},
		{Name: "data-dir", Aliases: []string{"d"}, Value: cli.String(&o.dataDir, "/var/lib/orch"), Env: envs("data-dir"), Usage: "folder for state"},
		{Name: "node-name", Value: cli.String(&o.nodeName, ""), Env: envs("node-name"), Usage: "node name (default: hostname)"},
		{Name: "node-ip", Value: cli.Strings(&o.nodeIPs, nil), Env: envs("node-ip"), Usage: "IP address of the node (default: the address that reaches the server)"},
		{Name: "node-label", Value: cli.Strings(&o.nodeLabels, nil), Env: envs("node-label"), Usage: "label k=v added to the Node at registration"},
		{Name: "node-taint", Value: cli.Strings(&o.nodeTaints, nil), Env: envs("node-taint"), Usage: "taint k=v:Effect added to the Node at registration"},
		{Name: "cgroup-root", Value: cli.String(&o.cgroupRoot, "/orch"), Env: envs("cgroup-root"), Usage: "cgroup parent of the pods"},
		{Name: "cluster-cidr", Value: cli.String(&o.clusterCIDR, "10.42.0.0/16"), Env: envs("cluster-cidr"), Usage: "pod IP range of the cluster (the server's --cluster-cidr)"},
		{Name: "flannel-backend", Value: cli.String(&o.flannelBackend, "vxlan"), Env: envs("flannel-backend"), Usage: "how pod traffic crosses nodes: vxlan, host-gw or none"},
		{Name: "disable-pod-fast-path", Value: cli.Bool(&o.disablePodFastPath, false), Env: envs("disable-pod-fast-path"), Usage: "keep pod traffic on the kernel's normal forwarding path (no eBPF fast path between pods and the VXLAN overlay)"},
		{Name: "cluster-dns", Value: cli.String(&o.clusterDNS, "10.43.0.10"), Env: envs("cluster-dns"), Usage: "nameserver of ClusterFirst pods"},
		{Name: "resolv-conf", Value: cli.String(&o.resolvConf, "/etc/resolv.conf"), Env: envs("resolv-conf"), Usage: "upstream resolvers of cluster DNS and of dnsPolicy Default pods"},
		{Name: "cluster-domain", Value: cli.String(&o.clusterDomain, "cluster.local"), Env: envs("cluster-domain"), Usage: "cluster DNS domain"},
		{Name: "private-registry", Value: cli.String(&o.privateRegistry, "/etc/orch/registries.yaml"), Env: envs("private-registry"), Usage: "registry mirrors and credentials"},
		{Name: "log-level", Value: cli.String(&o.logLevel, "info"), Env: envs("log-level"), Usage: "debug, info, warn or error"},
	}
}

func agentCommand() *cli.Command {
	o := &agentOptions{}
	return &cli.Command{
		Name:   "agent",
		Usage:  "join a cluster and run workloads on this machine",
		Flags:  o.flags(),
		Before: func(s *cli.Set) error { return loadConfigFile(s, o.config) },
		Action: func(ctx context.Context, _ []string) error {
			log, err := newLogger(o.logLevel)
			if err != nil {
				return err
			}
			idleGC()
			cfg, join, err := agentConfig(o)
			if err != nil {
				return err
			}
			netCfg, err := podnetConfig(o, cfg)
			if err != nil {
				return err
			}
			rc, err := agent.Join(ctx, join, log)
			if err != nil {
				return err
			}
			client, err := kube.NewForConfig(rc)
			if err != nil {
				return fmt.Errorf("agent: client: %w", err)
			}
			local, err := agent.OpenLocal(agent.LocalConfig{DataDir: cfg.DataDir, CgroupRoot: o.cgroupRoot,
				RegistriesFile: o.privateRegistry}, log)
			if err != nil {
				return err
			}
			a, err := agent.New(cfg, client, local.Deps(agent.PodnetFactory(netCfg, log)), log)
			if err != nil {
				return err
			}
			tlsCfg, err := rest.TLSConfigFor(rc)
			if err != nil {
				return fmt.Errorf("agent: TLS: %w", err)
			}
			tun, err := tunnel.NewClient(tunnel.ClientConfig{Server: join.ServerURL, TLS: tlsCfg}, a.NodeAPI(), log.With("component", "tunnel"))
			if err != nil {
				return err
			}
			proxy, err := netproxy.New(netproxy.Config{NodeName: cfg.NodeName, NodeIPs: cfg.NodeIPs, ClusterCIDR: netCfg.ClusterCIDR},
				client, log.With("component", "netproxy"))
			if err != nil {
				return err
			}
			clusterDNS, err := dns.New(dns.Config{Domain: cfg.ClusterDomain, Addrs: []netip.Addr{cfg.ClusterDNS}, Port: 53,
				Interface: "orch-dns", ResolvConf: cfg.ResolvConf}, client, log.With("component", "dns"))
			if err != nil {
				return err
			}
			g, ctx := errgroup.WithContext(ctx)
			g.Go(func() error { return local.Run(ctx) })
			g.Go(func() error { return a.Run(ctx) })
			g.Go(func() error { return tun.Run(ctx) })
			g.Go(func() error { return proxy.Run(ctx) })
			g.Go(func() error {
				// Cluster DNS failing (a forwarding loop, say) must not take
				// the node's pods down with it.
				if err := clusterDNS.Run(ctx); err != nil && ctx.Err() == nil {
					log.Error("cluster DNS stopped", "err", err)
				}
				return nil
			})
			if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		},
	}
}

// agentGCPercent is the agent's GOGC unless the environment sets one.
const agentGCPercent = 50

// idleGC collects the agent's heap at half the default growth: a node agent
// holds a few MB live and allocates little once its pods run, so the garbage
// the runtime lets accumulate (up to the live heap again at GOGC=100) is a
// good part of its anonymous memory. Idle, that is 1.6 MB less resident for
// about 15 ms more CPU a minute (a collection every 20-30 s instead of one a
// minute). GOGC in the environment still wins.
func idleGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(agentGCPercent)
	}
}

// agentConfig turns the flags into the agent's and the join's config.
func agentConfig(o *agentOptions) (agent.Config, agent.JoinConfig, error) {
	var cfg agent.Config
	var join agent.JoinConfig
	server := o.server
	if server == "" {
		return cfg, join, errors.New("--server (ORCH_URL) is required")
	}
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return cfg, join, fmt.Errorf("--server %q must be https://HOST:PORT", server)
	}
	token := o.token
	if token == "" && o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return cfg, join, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return cfg, join, errors.New("--token (ORCH_TOKEN) or --token-file is required")
	}
	cfg.DataDir = o.dataDir
	if !filepath.IsAbs(cfg.DataDir) {
		abs, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return cfg, join, fmt.Errorf("--data-dir: %w", err)
		}
		cfg.DataDir = abs
	}
	cfg.NodeName = o.nodeName
	if cfg.NodeName == "" {
		if cfg.NodeName, err = os.Hostname(); err != nil {
			return cfg, join, fmt.Errorf("node name: %w", err)
		}
	}
	cfg.NodeName = strings.ToLower(cfg.NodeName)
	if msgs := validation.IsDNS1123Subdomain(cfg.NodeName); len(msgs) > 0 {
		return cfg, join, fmt.Errorf("node name %q: %s", cfg.NodeName, strings.Join(msgs, "; "))
	}
	for _, s := range o.nodeIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return cfg, join, fmt.Errorf("--node-ip %q: %w", s, err)
		}
		cfg.NodeIPs = append(cfg.NodeIPs, a)
	}
	if len(cfg.NodeIPs) == 0 {
		a, err := localAddrTowards(u.Host)
		if err != nil {
			return cfg, join, fmt.Errorf("node IP (set --node-ip): %w", err)
		}
		cfg.NodeIPs = []netip.Addr{a}
	}
	if cfg.Labels, err = parseLabels(o.nodeLabels); err != nil {
		return cfg, join, err
	}
	if cfg.Taints, err = parseTaints(o.nodeTaints); err != nil {
		return cfg, join, err
	}
	if cfg.ClusterDNS, err = netip.ParseAddr(o.clusterDNS); err != nil {
		return cfg, join, fmt.Errorf("--cluster-dns: %w", err)
	}
	cfg.ClusterDomain = o.clusterDomain
	cfg.ResolvConf = o.resolvConf
	cfg.Version = version
	join = agent.JoinConfig{ServerURL: server, Token: token, NodeName: cfg.NodeName, Dir: filepath.Join(cfg.DataDir, "agent")}
	return cfg, join, nil
}

// podnetConfig is the pod network's configuration but for the node's pod
// CIDR, which the server assigns.
func podnetConfig(o *agentOptions, cfg agent.Config) (podnet.Config, error) {
	cidr, err := prefix("cluster-cidr", o.clusterCIDR)
	if err != nil {
		return podnet.Config{}, err
	}
	var nodeIP netip.Addr
	for _, a := range cfg.NodeIPs {
		if a.Is4() {
			nodeIP = a
			break
		}
	}
	backend := podnet.Backend(o.flannelBackend)
	switch backend {
	case podnet.BackendVXLAN, podnet.BackendHostGW, podnet.BackendNone:
	default:
		return podnet.Config{}, fmt.Errorf("--flannel-backend %q: want vxlan, host-gw or none", backend)
	}
	return podnet.Config{NodeName: cfg.NodeName, ClusterCIDR: cidr, NodeIP: nodeIP, Backend: backend,
		DataDir: filepath.Join(cfg.DataDir, "agent", "podnet"), NoFastPath: o.disablePodFastPath}, nil
}

// localAddrTowards returns the local address the kernel would use to reach
// hostport (a UDP "connect" sends nothing).
func localAddrTowards(hostport string) (netip.Addr, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	conn, err := net.Dial("udp", net.JoinHostPort(host, "6443"))
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	ap, err := netip.ParseAddrPort(conn.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, err
	}
	return ap.Addr().Unmap(), nil
}

func parseLabels(in []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range in {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("--node-label %q: want key=value", s)
		}
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			return nil, fmt.Errorf("--node-label %q: key: %s", s, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
			return nil, fmt.Errorf("--node-label %q: value: %s", s, strings.Join(msgs, "; "))
		}
		out[k] = v
	}
	return out, nil
}

func parseTaints(in []string) ([]corev1.Taint, error) {
	var out []corev1.Taint
	for _, s := range in {
		kv, effect, ok := strings.Cut(s, ":")
		if !ok {
			return nil, fmt.Errorf("--node-taint %q: want key=value:Effect", s)
		}
		k, v, _ := strings.Cut(kv, "=")
		switch corev1.TaintEffect(effect) {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			return nil, fmt.Errorf("--node-taint %q: effect must be NoSchedule, PreferNoSchedule or NoExecute", s)
		}
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			return nil, fmt.Errorf("--node-taint %q: key: %s", s, strings.Join(msgs, "; "))
		}
		if v != "" {
			if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
				return nil, fmt.Errorf("--node-taint %q: value: %s", s, strings.Join(msgs, "; "))
			}
		}
		out = append(out, corev1.Taint{Key: k, Value: v, Effect: corev1.TaintEffect(effect)})
	}
	return out, nil
}
