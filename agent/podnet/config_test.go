package podnet

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"go/parser"
	"go/token"
)

func TestValidateCIDRs(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		cluster, service string
		mask             int
		want             string // "" ok, else substring of the error
	}{
		{"10.42.0.0/16", "10.43.0.0/16", 24, ""},
		{"10.42.0.0/16", "10.42.128.0/17", 24, "overlap"},
		{"10.0.0.0/8", "10.43.0.0/16", 24, "overlap"},
		{"10.42.0.0/16", "10.43.0.0/30", 24, "too small"},
		{"10.42.0.0/16", "10.43.0.0/16", 30, "mask size"},
		{"10.42.0.0/16", "10.43.0.0/16", 8, "mask size"},
		{"10.42.0.0/24", "10.43.0.0/16", 20, "larger than the cluster"},
		{"10.42.0.1/16", "10.43.0.0/16", 24, "host bits"},
		{"fd00::/48", "10.43.0.0/16", 24, "IPv4"},
	} {
		err := ValidateCIDRs(p(tc.cluster), p(tc.service), tc.mask)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %s /%d: %v", tc.cluster, tc.service, tc.mask, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s %s /%d: error %v, want one mentioning %q", tc.cluster, tc.service, tc.mask, err, tc.want)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	good := Config{NodeName: "n1", ClusterCIDR: DefaultClusterCIDR, PodCIDR: netip.MustParsePrefix("10.42.1.0/24"),
		NodeIP: netip.MustParseAddr("192.0.2.1"), DataDir: t.TempDir()}
	if n, err := New(good, nil); err != nil {
		t.Fatalf("good config: %v", err)
	} else {
		n.Close()
	}
	for name, mut := range map[string]func(*Config){
		"pod CIDR outside cluster": func(c *Config) { c.PodCIDR = netip.MustParsePrefix("10.50.1.0/24") },
		"pod CIDR too small":       func(c *Config) { c.PodCIDR = netip.MustParsePrefix("10.42.1.0/30") },
		"no node IP for vxlan":     func(c *Config) { c.NodeIP = netip.Addr{} },
		"bad backend":              func(c *Config) { c.Backend = "gre" },
		"long bridge name":         func(c *Config) { c.Bridge = "averyveryverylongname" },
		"no data dir":              func(c *Config) { c.DataDir = "" },
		"no node name":             func(c *Config) { c.NodeName = "" },
	} {
		c := good
		mut(&c)
		if _, err := New(c, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestStableMAC(t *testing.T) {
	a, b := stableMAC("vtep", "n1"), stableMAC("vtep", "n1")
	if a.String() != b.String() {
		t.Error("MAC not stable")
	}
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Errorf("MAC %s is not locally administered unicast", a)
	}
	if stableMAC("vtep", "n2").String() == a.String() {
		t.Error("two nodes share a MAC")
	}
	if len(vethName("0f6c1b8e-4a4f-4b57-9d1a-8f1b1f6a2c11")) > 15 {
		t.Error("veth name longer than IFNAMSIZ")
	}
}

func TestPackageDocumented(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkgs {
		doc := false
		for _, f := range p.Files {
			doc = doc || f.Doc != nil
		}
		if !doc {
			t.Errorf("package %s has no doc comment", p.Name)
		}
	}
}
