package netproxy

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

var testRenderer = renderer{clusterCIDR: netip.MustParsePrefix("10.42.0.0/16"), mark: 0x4000}

func portsOf(t *testing.T, svc *v1.Service, sl ...*discoveryv1.EndpointSlice) []servicePort {
	t.Helper()
	p, w := servicePorts(svc, sl, "node1")
	if len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	return p
}

func chainOf(t *testing.T, p plan, name string) chainSpec {
	t.Helper()
	for _, c := range p.Chains {
		if c.Name == name {
			return c
		}
	}
	var names []string
	for _, c := range p.Chains {
		names = append(names, c.Name)
	}
	t.Fatalf("no chain %s in %v", name, names)
	return chainSpec{}
}

func exprsOf(c chainSpec) [][]expr.Any {
	var out [][]expr.Any
	for _, r := range c.Rules {
		out = append(out, r.Exprs)
	}
	return out
}

// TestRenderClusterIPGolden pins the exact expressions of a ClusterIP
// Service with two endpoints.
func TestRenderClusterIPGolden(t *testing.T) {
	svc := mkService("ns", "web", "10.43.0.10")
	sl := mkSlice("ns", "web", "web-1", tcpPorts, readyEP("10.42.0.5", "node1"), readyEP("10.42.1.6", "node2"))
	p := testRenderer.render(portsOf(t, svc, sl))

	dnat := func(ip [4]byte) []expr.Any { // meta l4proto tcp dnat to ip:8080
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Immediate{Register: 1, Data: ip[:]},
			&expr.Immediate{Register: 2, Data: []byte{0x1f, 0x90}},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		}
	}
	wantSvc := [][]expr.Any{
		{ // ip saddr != 10.42.0.0/16 jump mark-for-masquerade
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 0, 0}, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{10, 42, 0, 0}},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: "mark-for-masquerade"},
		},
		// numgen random mod 2 == 0 meta l4proto tcp dnat to 10.42.0.5:8080
		append([]expr.Any{
			&expr.Numgen{Register: 1, Modulus: 2, Type: unix.NFT_NG_RANDOM},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		}, dnat([4]byte{10, 42, 0, 5})...),
		dnat([4]byte{10, 42, 1, 6}),
	}
	if got := exprsOf(chainOf(t, p, "svc-ns/web/tcp/80")); !reflect.DeepEqual(got, wantSvc) {
		t.Errorf("service chain:\n got %#v\nwant %#v", got, wantSvc)
	}
	if want := []netip.Addr{netip.MustParseAddr("10.42.0.5"), netip.MustParseAddr("10.42.1.6")}; !reflect.DeepEqual(p.Hairpin, want) {
		t.Errorf("hairpin %v, want %v", p.Hairpin, want)
	}
	wantElems := map[elemKey]verdict{
		{mapServiceIPs, keyIPProtoPort(netip.MustParseAddr("10.43.0.10"), 6, 80)}: gotoChain("svc-ns/web/tcp/80"),
	}
	if !reflect.DeepEqual(p.Elems, wantElems) {
		t.Errorf("elements %v, want %v", p.Elems, wantElems)
	}
	if len(p.Chains) != 1 || len(p.Sets) != 0 {
		t.Errorf("%d chains %d sets, want 1 and 0", len(p.Chains), len(p.Sets))
	}
	if k := keyIPProtoPort(netip.MustParseAddr("10.43.0.10"), 6, 80); k != "\x0a\x2b\x00\x0a\x06\x00\x00\x00\x00\x50\x00\x00" {
		t.Errorf("key encoding %x", k)
	}
}

func TestRenderNodePortAndLoadBalancer(t *testing.T) {
	svc := mkService("ns", "lb", "10.43.0.11", withType(v1.ServiceTypeLoadBalancer), withPort("tcp", v1.ProtocolTCP, 443, 30443),
		withExternalIPs("192.0.2.1"))
	sl := mkSlice("ns", "lb", "lb-1", tcpPorts, readyEP("10.42.0.5", "node1"))
	p := testRenderer.render(portsOf(t, svc, sl))
	ext := "ext-ns/lb/tcp/443"
	want := map[elemKey]verdict{
		{mapServiceIPs, keyIPProtoPort(netip.MustParseAddr("10.43.0.11"), 6, 443)}: gotoChain("svc-ns/lb/tcp/443"),
		{mapServiceIPs, keyIPProtoPort(netip.MustParseAddr("192.0.2.1"), 6, 443)}:  gotoChain(ext),
		{mapNodePorts, keyProtoPort(6, 30443)}:                                     gotoChain(ext),
		{mapNodePorts, keyProtoPort(6, 443)}:                                       gotoChain(ext),
	}
	if !reflect.DeepEqual(p.Elems, want) {
		t.Errorf("elements:\n got %v\nwant %v", p.Elems, want)
	}
	// Cluster policy: external traffic is masqueraded, then balanced.
	wantExt := [][]expr.Any{
		{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainMarkMasq}},
		{&expr.Verdict{Kind: expr.VerdictGoto, Chain: "svc-ns/lb/tcp/443"}},
	}
	if got := exprsOf(chainOf(t, p, ext)); !reflect.DeepEqual(got, wantExt) {
		t.Errorf("ext chain %#v", got)
	}
}

func TestRenderExternalTrafficPolicyLocal(t *testing.T) {
	svc := mkService("ns", "loc", "10.43.0.12", withType(v1.ServiceTypeNodePort), withExtLocal(), withPort("tcp", v1.ProtocolTCP, 80, 30080))
	both := mkSlice("ns", "loc", "loc-1", tcpPorts, readyEP("10.42.0.5", "node1"), readyEP("10.42.1.6", "node2"))
	p := testRenderer.render(portsOf(t, svc, both))
	ext := chainOf(t, p, "ext-ns/loc/tcp/80")
	last := ext.Rules[len(ext.Rules)-1].Exprs
	if !reflect.DeepEqual(last, []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: "loc-ns/loc/tcp/80"}}) {
		t.Errorf("external traffic does not go to local endpoints: %#v", last)
	}
	for _, r := range ext.Rules {
		if slices.ContainsFunc(r.Exprs, func(e expr.Any) bool {
			v, ok := e.(*expr.Verdict)
			return ok && v.Chain == chainMarkMasq
		}) && !slices.ContainsFunc(r.Exprs, func(e expr.Any) bool { _, ok := e.(*expr.Fib); return ok }) {
			t.Errorf("external traffic masqueraded unconditionally: %#v", r.Exprs)
		}
	}
	loc := chainOf(t, p, "loc-ns/loc/tcp/80")
	if want := [][]expr.Any{append(matchL4(unix.IPPROTO_TCP), dnatTo(endpoint{IP: netip.MustParseAddr("10.42.0.5"), Port: 8080})...)}; !reflect.DeepEqual(exprsOf(loc), want) {
		t.Errorf("local chain %#v", exprsOf(loc))
	}

	// No local endpoint: external traffic from elsewhere is dropped.
	remote := mkSlice("ns", "loc", "loc-1", tcpPorts, readyEP("10.42.1.6", "node2"))
	p = testRenderer.render(portsOf(t, svc, remote))
	ext = chainOf(t, p, "ext-ns/loc/tcp/80")
	if last := ext.Rules[len(ext.Rules)-1].Exprs; !reflect.DeepEqual(last, []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}) {
		t.Errorf("no local endpoints: last rule %#v, want drop", last)
	}
}

func TestRenderInternalTrafficPolicyLocal(t *testing.T) {
	svc := mkService("ns", "il", "10.43.0.13", withIntLocal())
	remote := mkSlice("ns", "il", "il-1", tcpPorts, readyEP("10.42.1.6", "node2"))
	p := testRenderer.render(portsOf(t, svc, remote))
	want := map[elemKey]verdict{{mapNoEndpointIPs, keyIPProtoPort(netip.MustParseAddr("10.43.0.13"), 6, 80)}: verdictDrop}
	if !reflect.DeepEqual(p.Elems, want) {
		t.Errorf("no local endpoint: %v, want drop in %s", p.Elems, mapNoEndpointIPs)
	}
	local := mkSlice("ns", "il", "il-1", tcpPorts, readyEP("10.42.1.6", "node2"), readyEP("10.42.0.7", "node1"))
	p = testRenderer.render(portsOf(t, svc, local))
	want = map[elemKey]verdict{{mapServiceIPs, keyIPProtoPort(netip.MustParseAddr("10.43.0.13"), 6, 80)}: gotoChain("loc-ns/il/tcp/80")}
	if !reflect.DeepEqual(p.Elems, want) {
		t.Errorf("local endpoint: %v", p.Elems)
	}
}

func TestRenderNoEndpointsRejects(t *testing.T) {
	svc := mkService("ns", "none", "10.43.0.14", withType(v1.ServiceTypeNodePort), withPort("udp", v1.ProtocolUDP, 53, 30053))
	p := testRenderer.render(portsOf(t, svc))
	want := map[elemKey]verdict{
		{mapNoEndpointIPs, keyIPProtoPort(netip.MustParseAddr("10.43.0.14"), 17, 53)}: gotoChain(chainReject),
		{mapNoEndpointPorts, keyProtoPort(17, 30053)}:                                 gotoChain(chainReject),
	}
	if !reflect.DeepEqual(p.Elems, want) || len(p.Chains) != 0 {
		t.Errorf("elements %v chains %v", p.Elems, p.Chains)
	}
}

func TestRenderAffinity(t *testing.T) {
	svc := mkService("ns", "aff", "10.43.0.15", withAffinity(600))
	sl := mkSlice("ns", "aff", "aff-1", tcpPorts, readyEP("10.42.0.5", "node1"), readyEP("10.42.0.6", "node1"))
	p := testRenderer.render(portsOf(t, svc, sl))
	wantSets := []setSpec{
		{Name: "aff-ns/aff/tcp/80/10.42.0.5:8080/600", Timeout: 10 * time.Minute},
		{Name: "aff-ns/aff/tcp/80/10.42.0.6:8080/600", Timeout: 10 * time.Minute},
	}
	if !reflect.DeepEqual(p.Sets, wantSets) {
		t.Errorf("sets %v", p.Sets)
	}
	ep := chainOf(t, p, "ep-ns/aff/tcp/80/10.42.0.5:8080")
	wantUpdate := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Dynset{SrcRegKey: 1, SetName: wantSets[0].Name, Operation: unix.NFT_DYNSET_OP_UPDATE},
	}
	if !reflect.DeepEqual(ep.Rules[0].Exprs, wantUpdate) {
		t.Errorf("endpoint chain does not remember the client: %#v", ep.Rules[0].Exprs)
	}
	svcChain := chainOf(t, p, "svc-ns/aff/tcp/80")
	wantLookup := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: wantSets[0].Name},
		&expr.Verdict{Kind: expr.VerdictGoto, Chain: "ep-ns/aff/tcp/80/10.42.0.5:8080"},
	}
	if !reflect.DeepEqual(svcChain.Rules[1].Exprs, wantLookup) {
		t.Errorf("service chain does not look up affinity first: %#v", svcChain.Rules[1].Exprs)
	}
}

// ---- batches, through google/nftables' test dial ----

func changesOf(t *testing.T, svcs ...[]any) []change {
	t.Helper()
	var out []change
	for _, s := range svcs {
		svc := s[0].(*v1.Service)
		var sl []*discoveryv1.EndpointSlice
		for _, x := range s[1:] {
			sl = append(sl, x.(*discoveryv1.EndpointSlice))
		}
		out = append(out, change{key: svc.Namespace + "/" + svc.Name, ports: portsOf(t, svc, sl...)})
	}
	return out
}

func TestBatchFullSync(t *testing.T) {
	rec := &recorder{}
	c, _ := rec.dial()
	changes := changesOf(t, []any{mkService("default", "a", "10.43.0.1"), mkSlice("default", "a", "a-1", tcpPorts, readyEP("10.42.0.5", "node1"))})
	res, st, err := apply(c, "orch", &testRenderer, newState(), changes, true)
	must(t, err)
	msgs := rec.last(t)
	if len(msgs) < 3 || msgs[0].String() != "NEWTABLE orch" || msgs[1].String() != "DELTABLE orch" || msgs[2].String() != "NEWTABLE orch" {
		t.Fatalf("full sync must atomically replace the table; starts with:\n%s", msgList(msgs[:min(3, len(msgs))]))
	}
	for _, m := range msgs {
		if (m.Op == "DELTABLE" || m.Op == "NEWTABLE") && m.Name != "orch" {
			t.Errorf("touches another table: %s", m)
		}
	}
	for _, want := range []nlMsg{
		{Op: "NEWSET", Name: mapServiceIPs}, {Op: "NEWSET", Name: mapNodePorts},
		{Op: "NEWCHAIN", Name: "nat-prerouting"}, {Op: "NEWCHAIN", Name: "filter-output"},
		{Op: "NEWCHAIN", Name: "svc-default/a/tcp/80"}, {Op: "NEWSETELEM", Name: mapServiceIPs},
		{Op: "NEWSET", Name: setHairpin}, {Op: "NEWSETELEM", Name: setHairpin},
	} {
		if !hasMsg(msgs, want.Op, want.Name) {
			t.Errorf("missing %s", want)
		}
	}
	// Golden expression lists of the rules netlink carries.
	wantRules := map[string][][]string{
		"svc-default/a/tcp/80": {{"payload", "bitwise", "cmp", "immediate"}, {"meta", "cmp", "immediate", "immediate", "nat"}},
		"services":             {{"payload", "meta", "payload", "lookup"}, {"fib", "cmp", "payload", "cmp", "meta", "payload", "lookup"}},
		"nat-postrouting":      {{"payload", "payload", "lookup", "masq"}, {"meta", "bitwise", "cmp", "immediate"}, {"meta", "bitwise", "meta"}, {"fib", "cmp", "immediate"}, {"masq"}},
		"reject-chain":         {{"meta", "cmp", "reject"}, {"reject"}},
		"filter-input":         {{"ct", "bitwise", "cmp", "immediate"}},
	}
	got := map[string][][]string{}
	for _, m := range msgs {
		if m.Op == "NEWRULE" {
			got[m.Name] = append(got[m.Name], m.Exprs)
		}
	}
	for chain, want := range wantRules {
		if !reflect.DeepEqual(got[chain], want) {
			t.Errorf("chain %s rules %v, want %v", chain, got[chain], want)
		}
	}
	if res.changed != 1 || len(st.plans) != 1 {
		t.Errorf("changed %d, %d plans", res.changed, len(st.plans))
	}
}

func TestBatchIncremental(t *testing.T) {
	rec := &recorder{}
	svcA := mkService("default", "a", "10.43.0.1")
	svcB := mkService("default", "b", "10.43.0.2")
	slA := mkSlice("default", "a", "a-1", tcpPorts, readyEP("10.42.0.5", "node1"))
	slB := mkSlice("default", "b", "b-1", tcpPorts, readyEP("10.42.0.6", "node1"), readyEP("10.42.0.7", "node1"))
	c, _ := rec.dial()
	_, st, err := apply(c, "orch", &testRenderer, newState(), changesOf(t, []any{svcA, slA}, []any{svcB, slB}), true)
	must(t, err)

	onlyAbout := func(msgs []nlMsg, svc string) {
		t.Helper()
		if len(msgs) == 0 {
			t.Fatal("empty batch")
		}
		for _, m := range msgs {
			if m.Op == "NEWTABLE" || m.Op == "DELTABLE" {
				t.Errorf("incremental sync touches the table: %s", m)
			}
			if strings.Contains(m.Name, "/") && !strings.Contains(m.Name, "default/"+svc+"/") {
				t.Errorf("sync of %s touches %s", svc, m)
			}
		}
	}

	// Adding a Service touches only its own objects and map elements.
	svcC := mkService("default", "c", "10.43.0.3")
	slC := mkSlice("default", "c", "c-1", tcpPorts, readyEP("10.42.0.8", "node1"))
	c, _ = rec.dial()
	res, st, err := apply(c, "orch", &testRenderer, st, changesOf(t, []any{svcC, slC}), false)
	must(t, err)
	msgs := rec.last(t)
	onlyAbout(msgs, "c")
	if res.changed != 1 || !hasMsg(msgs, "NEWCHAIN", "svc-default/c/tcp/80") || !hasMsg(msgs, "NEWSETELEM", mapServiceIPs) {
		t.Errorf("add: %s", msgList(msgs))
	}

	// An unchanged Service costs nothing.
	n := len(rec.batches)
	c, _ = rec.dial()
	res, st, err = apply(c, "orch", &testRenderer, st, changesOf(t, []any{svcA, slA}), false)
	must(t, err)
	if res.changed != 0 || len(rec.batches) != n {
		t.Errorf("no-op sync sent a batch (changed %d)", res.changed)
	}

	// Removing an endpoint of B rewrites B's service chain and drops the
	// endpoint's hairpin element; map elements stay.
	slB2 := mkSlice("default", "b", "b-1", tcpPorts, readyEP("10.42.0.6", "node1"))
	c, _ = rec.dial()
	_, st, err = apply(c, "orch", &testRenderer, st, changesOf(t, []any{svcB, slB2}), false)
	must(t, err)
	msgs = rec.last(t)
	onlyAbout(msgs, "b")
	iFlush := slices.IndexFunc(msgs, func(m nlMsg) bool { return m.Op == "DELRULE" && m.Name == "svc-default/b/tcp/80" })
	iAdd := slices.IndexFunc(msgs, func(m nlMsg) bool { return m.Op == "NEWRULE" && m.Name == "svc-default/b/tcp/80" })
	if iFlush < 0 || iAdd < iFlush || !hasMsg(msgs, "DELSETELEM", setHairpin) {
		t.Errorf("endpoint removal:\n%s", msgList(msgs))
	}
	if hasMsg(msgs, "NEWSETELEM", mapServiceIPs) || hasMsg(msgs, "DELSETELEM", mapServiceIPs) || hasMsg(msgs, "NEWSETELEM", setHairpin) {
		t.Errorf("unchanged element rewritten:\n%s", msgList(msgs))
	}
	if st.hairpin[netip.MustParseAddr("10.42.0.7")] != 0 || st.hairpin[netip.MustParseAddr("10.42.0.6")] != 1 {
		t.Errorf("hairpin counts %v", st.hairpin)
	}

	// Deleting a Service removes its element before its chains.
	c, _ = rec.dial()
	_, st, err = apply(c, "orch", &testRenderer, st, []change{{key: "default/c"}}, false)
	must(t, err)
	msgs = rec.last(t)
	onlyAbout(msgs, "c")
	iElem := slices.IndexFunc(msgs, func(m nlMsg) bool { return m.Op == "DELSETELEM" })
	iChain := slices.IndexFunc(msgs, func(m nlMsg) bool { return m.Op == "DELCHAIN" })
	if iElem < 0 || iChain < iElem || len(st.plans) != 2 {
		t.Errorf("delete:\n%s", msgList(msgs))
	}
}

func TestBatchFailureKeepsState(t *testing.T) {
	rec := &recorder{}
	c, _ := rec.dial()
	_, st, err := apply(c, "orch", &testRenderer, newState(), changesOf(t, []any{mkService("default", "a", "10.43.0.1")}), true)
	must(t, err)
	rec.fail = errors.New("kernel says no")
	c, _ = rec.dial()
	_, st2, err := apply(c, "orch", &testRenderer, st, changesOf(t, []any{mkService("default", "b", "10.43.0.2")}), false)
	if err == nil || !strings.Contains(err.Error(), "kernel says no") {
		t.Fatalf("error %v", err)
	}
	if st2 != st || len(st.plans) != 1 {
		t.Errorf("state changed after a failed batch")
	}
}

func TestBatchConflictingElements(t *testing.T) {
	rec := &recorder{}
	a := mkService("default", "a", "10.43.0.1", withType(v1.ServiceTypeLoadBalancer), withPort("tcp", v1.ProtocolTCP, 80, 30001))
	b := mkService("default", "b", "10.43.0.2", withType(v1.ServiceTypeLoadBalancer), withPort("tcp", v1.ProtocolTCP, 80, 30002))
	c, _ := rec.dial()
	res, st, err := apply(c, "orch", &testRenderer, newState(), changesOf(t, []any{a}, []any{b}), true)
	must(t, err)
	if len(res.conflict) != 1 {
		t.Fatalf("conflicts %v", res.conflict)
	}
	// When a lets go of port 80, b is synced again and gets it.
	c, _ = rec.dial()
	res, _, err = apply(c, "orch", &testRenderer, st, []change{{key: "default/a"}}, false)
	must(t, err)
	if !reflect.DeepEqual(res.requeue, []string{"default/b"}) {
		t.Errorf("requeue %v", res.requeue)
	}
}

func TestBatchHairpinShared(t *testing.T) {
	rec := &recorder{}
	x := mkService("default", "x", "10.43.0.1")
	y := mkService("default", "y", "10.43.0.2")
	pod := readyEP("10.42.0.5", "node1")
	c, _ := rec.dial()
	_, st, err := apply(c, "orch", &testRenderer, newState(), changesOf(t,
		[]any{x, mkSlice("default", "x", "x-1", tcpPorts, pod)}, []any{y, mkSlice("default", "y", "y-1", tcpPorts, pod)}), true)
	must(t, err)
	// The pod still backs y: deleting x must keep its hairpin element.
	c, _ = rec.dial()
	_, st, err = apply(c, "orch", &testRenderer, st, []change{{key: "default/x"}}, false)
	must(t, err)
	if hasMsg(rec.last(t), "DELSETELEM", setHairpin) {
		t.Errorf("shared hairpin element deleted:\n%s", msgList(rec.last(t)))
	}
	c, _ = rec.dial()
	_, st, err = apply(c, "orch", &testRenderer, st, []change{{key: "default/y"}}, false)
	must(t, err)
	if !hasMsg(rec.last(t), "DELSETELEM", setHairpin) || len(st.hairpin) != 0 {
		t.Errorf("last user gone, element kept:\n%s", msgList(rec.last(t)))
	}
}
