package netproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Config configures a Proxy.
type Config struct {
	// NodeName is the name of the Node this proxy runs on; endpoints whose
	// nodeName matches are "local" for the Local traffic policies.
	NodeName string
	// NodeIPs are the node's own addresses. They are not needed to program
	// NodePorts (those match any local address through fib) but are used by
	// LoadBalancerIngress and logged for diagnosis.
	NodeIPs []netip.Addr
	// ClusterCIDR is the pod network (e.g. 10.42.0.0/16). Traffic to a
	// ClusterIP from outside it is masqueraded so replies come back through
	// this node. Optional: when invalid (zero), no such masquerade is done.
	ClusterCIDR netip.Prefix
	// TableName is the nftables table orch owns (default "orch"). The proxy
	// creates, rewrites and deletes only this table.
	TableName string
	// NetNS is the path of the network namespace to program (for example
	// /run/netns/foo). Empty means the proxy's own network namespace. Every
	// netlink socket (nftables and conntrack) is opened in it.
	NetNS string
	// MasqueradeMark is the packet mark bit that asks the postrouting chain to
	// masquerade (default 0x4000, as kube-proxy).
	MasqueradeMark uint32
	// MinSyncInterval is the minimum time between two syncs; changes that
	// arrive in between are coalesced into the next batch (default 1s).
	MinSyncInterval time.Duration
	// CheckInterval is how often the proxy checks that its table has not been
	// deleted or changed by someone else (default 10s).
	CheckInterval time.Duration
}

const (
	defaultTableName       = "orch"
	defaultMasqueradeMark  = 0x4000
	defaultMinSyncInterval = time.Second
	defaultCheckInterval   = 10 * time.Second
)

// withDefaults returns cfg with zero fields set to their defaults, or an error
// describing the first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.NodeName == "" {
		return cfg, errors.New("netproxy: config: NodeName is required")
	}
	if cfg.TableName == "" {
		cfg.TableName = defaultTableName
	}
	if len(cfg.TableName) > 255 {
		return cfg, fmt.Errorf("netproxy: config: table name %q longer than 255 bytes", cfg.TableName)
	}
	if cfg.MasqueradeMark == 0 {
		cfg.MasqueradeMark = defaultMasqueradeMark
	}
	if cfg.MasqueradeMark&(cfg.MasqueradeMark-1) != 0 {
		return cfg, fmt.Errorf("netproxy: config: masquerade mark %#x must be a single bit", cfg.MasqueradeMark)
	}
	if cfg.MinSyncInterval < 0 || cfg.CheckInterval < 0 {
		return cfg, errors.New("netproxy: config: negative interval")
	}
	if cfg.MinSyncInterval == 0 {
		cfg.MinSyncInterval = defaultMinSyncInterval
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = defaultCheckInterval
	}
	if cfg.ClusterCIDR.IsValid() {
		if !cfg.ClusterCIDR.Addr().Is4() {
			return cfg, fmt.Errorf("netproxy: config: cluster CIDR %s is not IPv4", cfg.ClusterCIDR)
		}
		cfg.ClusterCIDR = cfg.ClusterCIDR.Masked()
	}
	for _, ip := range cfg.NodeIPs {
		if !ip.IsValid() {
			return cfg, errors.New("netproxy: config: invalid node IP")
		}
	}
	return cfg, nil
}
