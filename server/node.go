package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/rest"

	"github.com/orch-dev/orch/agent"
	"github.com/orch-dev/orch/agent/podnet"
	"github.com/orch-dev/orch/dns"
	"github.com/orch-dev/orch/internal/inproc"
	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/netproxy"
	"github.com/orch-dev/orch/server/apiserver"
)

// nodeConfig is a client configuration for the embedded agent: in-process,
// with this node's identity, so node authorization applies as to any agent.
func (s *Server) nodeConfig() *rest.Config {
	u := &apiserver.User{Name: "system:node:" + s.cfg.NodeName, Groups: []string{apiserver.GroupNodes, "system:authenticated"}}
	return &rest.Config{
		Host: "http://orch-server.local",
		QPS:  -1,
		Transport: &inproc.Transport{Handler: s.api, Prepare: func(ctx context.Context) context.Context {
			return apiserver.WithUser(ctx, u)
		}},
	}
}

// runNode runs this machine as a node of its own cluster: the container
// runtime and images, the pod network, the agent (its node API served
// in-process to the API server), the Service proxy and cluster DNS.
func (s *Server) runNode(ctx context.Context) error {
	cfg := s.cfg
	nodeIPs := cfg.NodeIPs
	if len(nodeIPs) == 0 {
		ip, err := defaultNodeIP()
		if err != nil {
			return fmt.Errorf("node IP (set --node-ip): %w", err)
		}
		nodeIPs = []netip.Addr{ip}
	}
	client, err := kube.NewForConfig(s.nodeConfig())
	if err != nil {
		return fmt.Errorf("node client: %w", err)
	}
	local, err := agent.OpenLocal(agent.LocalConfig{DataDir: cfg.DataDir, CgroupRoot: cfg.CgroupRoot}, s.log)
	if err != nil {
		return err
	}
	var v4 netip.Addr
	for _, ip := range nodeIPs {
		if ip.Is4() {
			v4 = ip
			break
		}
	}
	network := agent.PodnetFactory(podnet.Config{
		NodeName: cfg.NodeName, ClusterCIDR: cfg.ClusterCIDR, NodeIP: v4,
		DataDir: filepath.Join(cfg.DataDir, "agent", "podnet"), NoFastPath: cfg.DisablePodFastPath,
	}, s.log)
	a, err := agent.New(agent.Config{
		NodeName: cfg.NodeName, NodeIPs: nodeIPs, DataDir: cfg.DataDir, ControlPlane: true,
		Version: cfg.Version, ClusterDNS: cfg.ClusterDNS, ResolvConf: cfg.ResolvConf,
		Labels: cfg.NodeLabels, Taints: cfg.NodeTaints,
	}, client, local.Deps(network), s.log.With("component", "agent"))
	if err != nil {
		return err
	}
	s.tunnel.RegisterLocal(cfg.NodeName, a.NodeAPI())
	proxy, err := netproxy.New(netproxy.Config{NodeName: cfg.NodeName, NodeIPs: nodeIPs, ClusterCIDR: cfg.ClusterCIDR},
		client, s.log.With("component", "netproxy"))
	if err != nil {
		return err
	}
	clusterDNS, err := dns.New(dns.Config{Domain: "cluster.local", Addrs: []netip.Addr{cfg.ClusterDNS}, Port: 53,
		Interface: "orch-dns", ResolvConf: cfg.ResolvConf}, client, s.log.With("component", "dns"))
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return local.Run(ctx) })
	g.Go(func() error { return a.Run(ctx) })
	g.Go(func() error { return proxy.Run(ctx) })
	g.Go(func() error {
		// Cluster DNS failing (a forwarding loop, say) must not take the
		// node's pods down with it.
		if err := clusterDNS.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("cluster DNS stopped", "err", err)
		}
		return nil
	})
	return g.Wait()
}

// defaultNodeIP is the first global unicast IPv4 address of an interface
// that is up and not a loopback.
func defaultNodeIP() (netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			p, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			if ip := p.Addr(); ip.Is4() && ip.IsGlobalUnicast() {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, errors.New("no interface with a global IPv4 address")
}
