package servicelb

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func node(name string, ready bool, lbl map[string]string, addrs ...corev1.NodeAddress) *corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl},
		Status: corev1.NodeStatus{Addresses: addrs, Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}}}
}

func TestIngress(t *testing.T) {
	in := func(ip string) corev1.NodeAddress {
		return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
	}
	ex := func(ip string) corev1.NodeAddress {
		return corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: ip}
	}
	nodes := []*corev1.Node{
		node("b", true, nil, in("10.0.0.10")),
		node("a", true, map[string]string{"lb": "off"}, in("10.0.0.2")),
		node("c", false, nil, in("10.0.0.3")),
		node("d", true, nil, in("10.0.0.4"), ex("203.0.113.1")),
		node("e", true, nil, in("fd00::5")),
		node("f", true, nil, in("not-an-ip")),
	}
	ips := func(l []corev1.LoadBalancerIngress) []string {
		var out []string
		for _, i := range l {
			out = append(out, i.IP)
		}
		return out
	}
	got := ips(Ingress(nodes, labels.Everything(), nil))
	want := []string{"10.0.0.2", "10.0.0.10", "203.0.113.1", "fd00::5"}
	if len(got) != len(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v want %v", got, want)
		}
	}
	sel, _ := labels.Parse("lb!=off")
	got = ips(Ingress(nodes, sel, []corev1.IPFamily{corev1.IPv4Protocol}))
	if len(got) != 2 || got[0] != "10.0.0.10" || got[1] != "203.0.113.1" {
		t.Fatalf("selected v4: %v", got)
	}
}
