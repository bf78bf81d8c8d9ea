package podnet

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func mac(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

func testCfg() *Config {
	c := &Config{NodeName: "a", ClusterCIDR: DefaultClusterCIDR, PodCIDR: netip.MustParsePrefix("10.42.0.0/24"),
		NodeIP: netip.MustParseAddr("192.0.2.1"), DataDir: "/x"}
	c.setDefaults()
	return c
}

func TestPeerFromNode(t *testing.T) {
	p, err := PeerFromNode("b", "10.42.1.0/24", map[string]string{AnnotationNodeIP: "192.0.2.2", AnnotationVTEPMAC: "02:00:00:00:00:02"})
	if err != nil {
		t.Fatal(err)
	}
	if p.NodeName != "b" || p.PodCIDR.String() != "10.42.1.0/24" || p.NodeIP.String() != "192.0.2.2" || p.VTEPMAC.String() != "02:00:00:00:00:02" {
		t.Errorf("peer %+v", p)
	}
	if _, err := PeerFromNode("c", "", map[string]string{}); err == nil || !strings.Contains(err.Error(), AnnotationNodeIP) {
		t.Errorf("node without annotations: %v", err)
	}
	if _, err := PeerFromNode("c", "10.42.2.0/24", map[string]string{AnnotationNodeIP: "192.0.2.3", AnnotationVTEPMAC: "zz"}); err == nil {
		t.Error("bad MAC accepted")
	}
}

func TestCheckPeers(t *testing.T) {
	cfg := testCfg()
	ip := netip.MustParseAddr
	cidr := netip.MustParsePrefix
	peers := []Peer{
		{NodeName: "a", PodCIDR: cidr("10.42.0.0/24"), NodeIP: ip("192.0.2.1"), VTEPMAC: mac("02:00:00:00:00:01")}, // self
		{NodeName: "c", PodCIDR: cidr("10.42.2.0/24"), NodeIP: ip("192.0.2.3"), VTEPMAC: mac("02:00:00:00:00:03")},
		{NodeName: "b", PodCIDR: cidr("10.42.1.0/24"), NodeIP: ip("192.0.2.2"), VTEPMAC: mac("02:00:00:00:00:02")},
		{NodeName: "d", PodCIDR: cidr("10.42.0.0/24"), NodeIP: ip("192.0.2.4"), VTEPMAC: mac("02:00:00:00:00:04")}, // overlaps self
		{NodeName: "e", PodCIDR: cidr("10.42.2.0/25"), NodeIP: ip("192.0.2.5"), VTEPMAC: mac("02:00:00:00:00:05")}, // overlaps c
		{NodeName: "f", PodCIDR: cidr("10.99.0.0/24"), NodeIP: ip("192.0.2.6"), VTEPMAC: mac("02:00:00:00:00:06")}, // outside
		{NodeName: "g", PodCIDR: cidr("10.42.7.0/24"), NodeIP: ip("192.0.2.7")},                                    // no MAC
	}
	good, err := checkPeers(cfg, peers)
	var names []string
	for _, p := range good {
		names = append(names, p.NodeName)
	}
	if strings.Join(names, ",") != "b,c" {
		t.Errorf("good peers %v, want b,c", names)
	}
	for _, bad := range []string{"peer d", "peer e", "peer f", "peer g"} {
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("error %v does not mention %s", err, bad)
		}
	}
	if err != nil && strings.Contains(err.Error(), "peer a") {
		t.Error("self reported as a bad peer")
	}
}

func TestPlanPeerEntries(t *testing.T) {
	cfg := testCfg()
	ip := netip.MustParseAddr
	cidr := netip.MustParsePrefix
	b := Peer{NodeName: "b", PodCIDR: cidr("10.42.1.0/24"), NodeIP: ip("192.0.2.2"), VTEPMAC: mac("02:00:00:00:00:02")}
	c := Peer{NodeName: "c", PodCIDR: cidr("10.42.2.0/24"), NodeIP: ip("192.0.2.3"), VTEPMAC: mac("02:00:00:00:00:03")}
	haveR, haveN := wantEntries(cfg, []Peer{b, c}, 7, 2)
	if len(haveR) != 2 || len(haveN) != 4 {
		t.Fatalf("entries %v %v", haveR, haveN)
	}
	if r := haveR[0]; r.Gw != ip("10.42.1.0") || !r.OnLink || r.Link != 7 {
		t.Errorf("vxlan route %+v, want via the peer's .0 onlink on the vxlan device", r)
	}
	// c leaves; b moves to a new node IP and VTEP MAC; d arrives.
	b2 := b
	b2.NodeIP, b2.VTEPMAC = ip("192.0.2.22"), mac("02:00:00:00:00:22")
	d := Peer{NodeName: "d", PodCIDR: cidr("10.42.3.0/24"), NodeIP: ip("192.0.2.4"), VTEPMAC: mac("02:00:00:00:00:04")}
	wantR, wantN := wantEntries(cfg, []Peer{b2, d}, 7, 2)
	addR, delR := plan(wantR, haveR, routeKey)
	addN, delN := plan(wantN, haveN, neighKey)
	if len(addR) != 1 || addR[0].Dst != d.PodCIDR || len(delR) != 1 || delR[0].Dst != c.PodCIDR {
		t.Errorf("routes add %v del %v", addR, delR)
	}
	// b's neighbour is replaced (same IP key), its FDB entry keyed by MAC is
	// replaced by a new one and the old deleted; c's two entries deleted;
	// d's two added.
	if len(addN) != 4 || len(delN) != 3 {
		t.Errorf("neighbours add %v del %v", addN, delN)
	}
	// Nothing changes: nothing to do.
	addR, delR = plan(wantR, wantR, routeKey)
	addN, delN = plan(wantN, wantN, neighKey)
	if len(addR)+len(delR)+len(addN)+len(delN) != 0 {
		t.Errorf("no-op plan has work: %v %v %v %v", addR, delR, addN, delN)
	}
	// host-gw: routes via the node IP on the uplink, no neighbours.
	cfg.Backend = BackendHostGW
	r, n := wantEntries(cfg, []Peer{b}, 7, 2)
	if len(n) != 0 || len(r) != 1 || r[0].Gw != b.NodeIP || r[0].Link != 2 || r[0].OnLink {
		t.Errorf("host-gw entries %v %v", r, n)
	}
	cfg.Backend = BackendNone
	if r, n := wantEntries(cfg, []Peer{b}, 7, 2); len(r)+len(n) != 0 {
		t.Errorf("none backend wants %v %v", r, n)
	}
}
