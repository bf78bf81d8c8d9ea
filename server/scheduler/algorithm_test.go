package scheduler

import (
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func mustInfo(t *testing.T, p *corev1.Pod) *podInfo {
	t.Helper()
	pi, err := newPodInfo(p, p.Namespace+"/"+p.Name, newNonzeroDefaults())
	if err != nil {
		t.Fatal(err)
	}
	return pi
}

func cacheWith(nodes ...*corev1.Node) *nodeCache {
	c := newCache()
	for _, n := range nodes {
		c.setNode(n)
	}
	return c
}

func TestInitContainerRequests(t *testing.T) {
	p := testPod("default", "p", 500, 0)
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c2", Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("300m")}}})
	p.Spec.InitContainers = []corev1.Container{{Name: "init", Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1200m"), corev1.ResourceMemory: resource.MustParse("1Gi")}}}}
	pi := mustInfo(t, p)
	// max(init 1200m, app 500m+300m) and max(init 1Gi, app 0).
	if pi.req.milliCPU != 1200 || pi.req.memory != 1<<30 || pi.req.pods != 1 {
		t.Fatalf("requests = %+v", pi.req)
	}
	p.Spec.InitContainers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("100m")
	if pi := mustInfo(t, p); pi.req.milliCPU != 800 {
		t.Fatalf("cpu = %d, want 800", pi.req.milliCPU)
	}
}

func TestHostPortConflicts(t *testing.T) {
	cases := []struct {
		a, b hostPort
		want bool
	}{
		{hostPort{"", "TCP", 80}, hostPort{"", "TCP", 80}, true},
		{hostPort{"", "TCP", 80}, hostPort{"", "UDP", 80}, false},
		{hostPort{"10.0.0.1", "TCP", 80}, hostPort{"10.0.0.2", "TCP", 80}, false},
		{hostPort{"10.0.0.1", "TCP", 80}, hostPort{"0.0.0.0", "TCP", 80}, true},
		{hostPort{"10.0.0.1", "TCP", 80}, hostPort{"10.0.0.1", "TCP", 81}, false},
	}
	for _, c := range cases {
		if got := c.a.conflicts(c.b); got != c.want {
			t.Errorf("%v vs %v = %v", c.a, c.b, got)
		}
	}
}

func TestFitReportsEveryShortfall(t *testing.T) {
	c := cacheWith(testNode("n", 1, 1, 110, nil))
	a := newAlgorithm(0, logr.Discard())
	n, d := a.schedule(c, mustInfo(t, testPod("default", "p", 2000, 2048)))
	if n != nil {
		t.Fatal("scheduled")
	}
	want := "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
	if got := d.message(); got != want {
		t.Fatalf("got %q", got)
	}
	if _, d := a.schedule(newCache(), mustInfo(t, testPod("default", "p", 0, 0))); d.message() != reasonNoNodes {
		t.Fatalf("no nodes: %q", d.message())
	}
}

func TestScoresPreferences(t *testing.T) {
	soft := testNode("soft", 4, 8, 110, map[string]string{"disk": "hdd"})
	soft.Spec.Taints = []corev1.Taint{{Key: "spot", Effect: corev1.TaintEffectPreferNoSchedule}}
	plain := testNode("plain", 4, 8, 110, map[string]string{"disk": "hdd"})
	ssd := testNode("ssd", 4, 8, 110, map[string]string{"disk": "ssd"})
	a := newAlgorithm(0, logr.Discard())

	// PreferNoSchedule: avoided, not forbidden.
	c := cacheWith(soft, plain)
	for i := 0; i < 20; i++ {
		if n, _ := a.schedule(c, mustInfo(t, testPod("default", "p", 0, 0))); n.name != "plain" {
			t.Fatalf("picked %s over an untainted node", n.name)
		}
	}
	c = cacheWith(soft)
	if n, _ := a.schedule(c, mustInfo(t, testPod("default", "p", 0, 0))); n == nil {
		t.Fatal("PreferNoSchedule filtered")
	}

	// Preferred affinity.
	c = cacheWith(plain, ssd)
	p := testPod("default", "p", 0, 0)
	p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{
		Weight:     10,
		Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "disk", Operator: corev1.NodeSelectorOpIn, Values: []string{"ssd"}}}},
	}}}}
	for i := 0; i < 20; i++ {
		if n, _ := a.schedule(c, mustInfo(t, p)); n.name != "ssd" {
			t.Fatalf("picked %s, want ssd", n.name)
		}
	}
}

func TestTiesBrokenAtRandom(t *testing.T) {
	var nodes []*corev1.Node
	for _, n := range []string{"a", "b", "c"} {
		nodes = append(nodes, testNode(n, 4, 8, 110, nil))
	}
	c := cacheWith(nodes...)
	a := newAlgorithm(0, logr.Discard())
	seen := map[string]int{}
	for i := 0; i < 300; i++ {
		n, _ := a.schedule(c, mustInfo(t, testPod("default", "p", 0, 0)))
		seen[n.name]++
	}
	if len(seen) != 3 {
		t.Fatalf("ties always went to %v", seen)
	}
}

func TestAssumedPodsCount(t *testing.T) {
	c := cacheWith(testNode("n", 2, 8, 110, nil))
	a := newAlgorithm(0, logr.Discard())
	for i := 0; i < 3; i++ {
		p := testPod("default", "p", 1000, 0)
		p.UID = types.UID(rune('a' + i))
		pi := mustInfo(t, p)
		n, _ := a.schedule(c, pi)
		if i < 2 {
			if n == nil {
				t.Fatalf("pod %d did not fit", i)
			}
			c.assumeLocked(pi, n)
			continue
		}
		if n != nil {
			t.Fatal("third pod double-booked the node")
		}
	}
	// A failed binding frees the place; an expired one too.
	c.forget("a")
	if n, _ := a.schedule(c, mustInfo(t, testPod("default", "p", 1000, 0))); n == nil {
		t.Fatal("forgotten pod still counted")
	}
	now := metav1.Now().Time
	c.finishBinding("b", now)
	if got := c.expire(now.Add(2*ttlForTest), ttlForTest); got != 1 {
		t.Fatalf("expired %d", got)
	}
	if c.known("b") {
		t.Fatal("expired pod still known")
	}
}

func TestNumToFind(t *testing.T) {
	a := newAlgorithm(0, logr.Discard())
	for _, c := range []struct{ total, want int }{{3, 3}, {99, 99}, {100, 100}, {1000, 420}, {5000, 500}, {20000, 1000}} {
		if got := a.numToFind(c.total); got != c.want {
			t.Errorf("numToFind(%d) = %d, want %d", c.total, got, c.want)
		}
	}
	a.percentage = 100
	if got := a.numToFind(5000); got != 5000 {
		t.Errorf("100%%: %d", got)
	}
}

const ttlForTest = 30e9
