package netproxy

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func eps(spec ...string) []endpoint {
	var out []endpoint
	for i := 0; i+1 < len(spec); i += 2 {
		ap := netip.MustParseAddrPort(spec[i])
		out = append(out, endpoint{IP: ap.Addr(), Port: ap.Port(), Local: spec[i+1] == "local"})
	}
	return out
}

func TestServicePortsBasic(t *testing.T) {
	svc := mkService("ns", "web", "10.43.0.10", withType(v1.ServiceTypeLoadBalancer), withAffinity(60), withExtLocal(),
		withPort("http", v1.ProtocolTCP, 80, 30080), withPort("dns", v1.ProtocolUDP, 53, 30053),
		withExternalIPs("192.0.2.7", "2001:db8::1"))
	svc.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "192.0.2.8"}, {Hostname: "lb.example"}}
	sl := mkSlice("ns", "web", "web-1",
		[]slicePort{{"http", v1.ProtocolTCP, 8080}, {"dns", v1.ProtocolUDP, 5353}},
		readyEP("10.42.0.12", "node1"), readyEP("10.42.1.5", "node2"))
	got, warnings := servicePorts(svc, []*discoveryv1.EndpointSlice{sl}, "node1")
	if len(warnings) != 0 {
		t.Fatalf("warnings: %v", warnings)
	}
	ext := []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("192.0.2.8")}
	want := []servicePort{
		{Name: "ns/web/tcp/80", Proto: 6, Port: 80, ClusterIPs: []netip.Addr{netip.MustParseAddr("10.43.0.10")}, NodePort: 30080,
			LoadBalance: true, ExternalIPs: ext, Affinity: time.Minute, ExtLocal: true,
			Endpoints: eps("10.42.0.12:8080", "local", "10.42.1.5:8080", ""), LocalEndpoints: eps("10.42.0.12:8080", "local")},
		{Name: "ns/web/udp/53", Proto: 17, Port: 53, ClusterIPs: []netip.Addr{netip.MustParseAddr("10.43.0.10")}, NodePort: 30053,
			LoadBalance: true, ExternalIPs: ext, Affinity: time.Minute, ExtLocal: true,
			Endpoints: eps("10.42.0.12:5353", "local", "10.42.1.5:5353", ""), LocalEndpoints: eps("10.42.0.12:5353", "local")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", got, want)
	}
}

func TestServicePortsEndpointConditions(t *testing.T) {
	svc := mkService("ns", "web", "10.43.0.10")
	for _, c := range []struct {
		name string
		eps  []ep
		want []endpoint
	}{
		{"ready only", []ep{readyEP("10.42.0.1", "n"), {ip: "10.42.0.2", node: "n", ready: false, serving: true, term: true}}, eps("10.42.0.1:8080", "")},
		{"terminating fallback", []ep{{ip: "10.42.0.2", node: "n", serving: true, term: true}, {ip: "10.42.0.3", node: "n", term: true}}, eps("10.42.0.2:8080", "")},
		{"not serving", []ep{{ip: "10.42.0.2", node: "n"}}, nil},
		{"duplicate across slices", []ep{readyEP("10.42.0.1", "n"), readyEP("10.42.0.1", "n")}, eps("10.42.0.1:8080", "")},
		{"bad address skipped", []ep{readyEP("nope", "n"), readyEP("10.42.0.4", "n")}, eps("10.42.0.4:8080", "")},
	} {
		t.Run(c.name, func(t *testing.T) {
			sl := mkSlice("ns", "web", "web-1", []slicePort{{"tcp", v1.ProtocolTCP, 8080}}, c.eps...)
			got, _ := servicePorts(svc, []*discoveryv1.EndpointSlice{sl}, "node1")
			if len(got) != 1 {
				t.Fatalf("got %d ports", len(got))
			}
			if !reflect.DeepEqual(got[0].Endpoints, c.want) {
				t.Fatalf("endpoints %v, want %v", got[0].Endpoints, c.want)
			}
		})
	}
}

func TestServicePortsSkipped(t *testing.T) {
	ext := mkService("ns", "x", "")
	ext.Spec.Type = v1.ServiceTypeExternalName
	headless := mkService("ns", "h", v1.ClusterIPNone)
	badProto := mkService("ns", "b", "10.43.0.9", func(s *v1.Service) {
		s.Spec.Ports = []v1.ServicePort{{Name: "a", Protocol: "ICMP", Port: 1}, {Name: "b", Protocol: v1.ProtocolTCP, Port: 2}}
	})
	if p, _ := servicePorts(ext, nil, "n"); p != nil {
		t.Errorf("ExternalName: %v", p)
	}
	if p, _ := servicePorts(headless, nil, "n"); p != nil {
		t.Errorf("headless: %v", p)
	}
	p, w := servicePorts(badProto, nil, "n")
	if len(p) != 1 || p[0].Port != 2 || len(w) != 1 {
		t.Errorf("bad protocol: ports %v warnings %v", p, w)
	}
}

func TestConfigDefaults(t *testing.T) {
	if _, err := (Config{}).withDefaults(); err == nil {
		t.Error("missing node name accepted")
	}
	if _, err := (Config{NodeName: "n", MasqueradeMark: 0x3}).withDefaults(); err == nil {
		t.Error("multi-bit mark accepted")
	}
	if _, err := (Config{NodeName: "n", ClusterCIDR: netip.MustParsePrefix("fd00::/64")}).withDefaults(); err == nil {
		t.Error("IPv6 cluster CIDR accepted")
	}
	c, err := (Config{NodeName: "n"}).withDefaults()
	if err != nil || c.TableName != "orch" || c.MasqueradeMark != 0x4000 || c.MinSyncInterval != time.Second {
		t.Errorf("defaults: %+v %v", c, err)
	}
}

func TestLoadBalancerIngress(t *testing.T) {
	node := func(name string, ready bool, addrs ...v1.NodeAddress) *v1.Node {
		st := v1.ConditionFalse
		if ready {
			st = v1.ConditionTrue
		}
		n := &v1.Node{}
		n.Name = name
		n.Status.Addresses = addrs
		n.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: st}}
		return n
	}
	in := func(a string) v1.NodeAddress { return v1.NodeAddress{Type: v1.NodeInternalIP, Address: a} }
	ex := func(a string) v1.NodeAddress { return v1.NodeAddress{Type: v1.NodeExternalIP, Address: a} }
	got := LoadBalancerIngress([]*v1.Node{
		node("a", true, in("10.0.0.2")), node("b", true, in("10.0.0.1")), node("c", false, in("10.0.0.3")), node("d", true, in("10.0.0.1")),
	})
	if len(got) != 2 || got[0].IP != "10.0.0.1" || got[1].IP != "10.0.0.2" {
		t.Errorf("internal: %+v", got)
	}
	got = LoadBalancerIngress([]*v1.Node{node("a", true, in("10.0.0.2"), ex("203.0.113.5")), node("b", true, in("10.0.0.1"))})
	if len(got) != 1 || got[0].IP != "203.0.113.5" {
		t.Errorf("external: %+v", got)
	}
	if got := LoadBalancerIngress(nil); len(got) != 0 {
		t.Errorf("no nodes: %+v", got)
	}
}
