package scheduler

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/orch-dev/orch/internal/apitest"
	"github.com/orch-dev/orch/internal/kube"
)

func createPod(t *testing.T, cs kube.Interface, p *corev1.Pod) {
	t.Helper()
	p.UID = ""
	if _, err := cs.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", p.Name, err)
	}
}

// waitBound waits for the pod to be bound and returns its node.
func waitBound(t *testing.T, cs kube.Interface, ns, name string) string {
	t.Helper()
	var node string
	waitFor(t, 20*time.Second, "pod "+name+" bound", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		node = p.Spec.NodeName
		return node != "", nil
	})
	return node
}

// waitUnschedulable waits for PodScheduled=False and returns its message.
func waitUnschedulable(t *testing.T, cs kube.Interface, ns, name string) string {
	t.Helper()
	var msg string
	waitFor(t, 20*time.Second, "pod "+name+" unschedulable", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Spec.NodeName != "" {
			return false, fmt.Errorf("pod bound to %s", p.Spec.NodeName)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				msg = c.Message
				return true, nil
			}
		}
		return false, nil
	})
	return msg
}

func hasEvent(t *testing.T, cs kube.Interface, ns, pod, reason, contains string) {
	t.Helper()
	waitFor(t, 20*time.Second, reason+" event for "+pod, func() (bool, error) {
		evs, err := cs.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == pod && e.Reason == reason && strings.Contains(e.Message, contains) {
				return true, nil
			}
		}
		return false, nil
	})
}

func TestUnschedulableMessageAndRetryWhenNodeAppears(t *testing.T) {
	srv := apitest.Start(t)
	cs := srv.Kube
	createNodes(t, cs,
		testNode("orchtest-a", 4, 8, 110, map[string]string{"zone": "a"}),
		testNode("orchtest-b1", 2, 8, 110, map[string]string{"zone": "b"}),
		testNode("orchtest-b2", 2, 8, 110, map[string]string{"zone": "b"}),
	)
	startScheduler(t, cs, Config{})
	p := testPod("default", "big", 3000, 0)
	p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"a"}}},
		}}},
	}}
	createPod(t, cs, p)
	want := "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
	if got := waitUnschedulable(t, cs, "default", "big"); got != want {
		t.Fatalf("message:\n got %q\nwant %q", got, want)
	}
	hasEvent(t, cs, "default", "big", "FailedScheduling", "Insufficient cpu")

	createNodes(t, cs, testNode("orchtest-b3", 4, 8, 110, map[string]string{"zone": "b"}))
	if node := waitBound(t, cs, "default", "big"); node != "orchtest-b3" {
		t.Fatalf("bound to %s, want orchtest-b3", node)
	}
	hasEvent(t, cs, "default", "big", "Scheduled", "Successfully assigned default/big to orchtest-b3")
	got, err := cs.CoreV1().Pods("default").Get(context.Background(), "big", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range got.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			t.Fatalf("PodScheduled = %s after binding", c.Status)
		}
	}
}

func TestFilters(t *testing.T) {
	srv := apitest.Start(t)
	cs := srv.Kube
	cordoned := testNode("orchtest-cordoned", 4, 8, 110, map[string]string{"role": "cordoned"})
	cordoned.Spec.Unschedulable = true
	tainted := testNode("orchtest-tainted", 4, 8, 110, map[string]string{"role": "tainted"})
	tainted.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
	notReady := testNode("orchtest-notready", 4, 8, 110, map[string]string{"role": "notready"})
	notReady.Status.Conditions[0].Status = corev1.ConditionFalse
	small := testNode("orchtest-small", 1, 1, 2, map[string]string{"role": "small"})
	createNodes(t, cs, cordoned, tainted, notReady, small, testNode("orchtest-plain", 4, 8, 110, map[string]string{"role": "plain"}))
	startScheduler(t, cs, Config{})

	sel := func(p *corev1.Pod, role string) *corev1.Pod {
		p.Spec.NodeSelector = map[string]string{"role": role}
		return p
	}
	tolerate := func(p *corev1.Pod, tols ...corev1.Toleration) *corev1.Pod {
		p.Spec.Tolerations = append(p.Spec.Tolerations, tols...)
		return p
	}
	ports := func(p *corev1.Pod, port int32, ip string, proto corev1.Protocol) *corev1.Pod {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: port, HostIP: ip, Protocol: proto}}
		return p
	}
	onNode := func(p *corev1.Pod, name string) *corev1.Pod {
		p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{name}}},
			}}},
		}}
		return p
	}
	// only is the message when the pod selects one node by role, which
	// fails for reason r; the others fail on their first filter.
	only := func(role, r string) string {
		first := map[string]string{
			"cordoned": "node(s) were unschedulable",
			"tainted":  "node(s) had untolerated taint {dedicated: gpu}",
			"notready": "node(s) had untolerated taint {node.kubernetes.io/not-ready: }",
			"small":    "node(s) didn't match Pod's node affinity/selector",
			"plain":    "node(s) didn't match Pod's node affinity/selector",
		}
		first[role] = r
		d := diagnosis{total: 5, reasons: map[string]int{}}
		for _, reason := range first {
			d.reasons[reason]++
		}
		return d.message()
	}
	cases := []struct {
		pod     *corev1.Pod
		node    string // want bound here, or
		message string // want unschedulable with this message
	}{
		{pod: sel(testPod("default", "cordon-no", 0, 0), "cordoned"), message: only("cordoned", "node(s) were unschedulable")},
		{pod: tolerate(sel(testPod("default", "cordon-yes", 0, 0), "cordoned"),
			corev1.Toleration{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}), node: "orchtest-cordoned"},
		{pod: sel(testPod("default", "taint-no", 0, 0), "tainted"), message: only("tainted", "node(s) had untolerated taint {dedicated: gpu}")},
		{pod: tolerate(sel(testPod("default", "taint-yes", 0, 0), "tainted"),
			corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "gpu", Effect: corev1.TaintEffectNoSchedule}), node: "orchtest-tainted"},
		{pod: sel(testPod("default", "notready-no", 0, 0), "notready"), message: only("notready", "node(s) had untolerated taint {node.kubernetes.io/not-ready: }")},
		{pod: tolerate(sel(testPod("default", "notready-yes", 0, 0), "notready"), corev1.Toleration{Operator: corev1.TolerationOpExists}), node: "orchtest-notready"},
		{pod: onNode(testPod("default", "field", 0, 0), "orchtest-plain"), node: "orchtest-plain"},
		{pod: sel(testPod("default", "mem", 0, 2048), "small"), message: only("small", "Insufficient memory")},
		{pod: ports(sel(testPod("default", "port-1", 0, 0), "small"), 8080, "", ""), node: "orchtest-small"},
		{pod: ports(sel(testPod("default", "port-udp", 0, 0), "small"), 8080, "", corev1.ProtocolUDP), node: "orchtest-small"},
		{pod: ports(sel(testPod("default", "port-2", 0, 0), "small"), 8080, "127.0.0.1", ""), message: only("small", "node(s) didn't have free ports for the requested pod ports")},
		{pod: sel(testPod("default", "third", 0, 0), "small"), message: only("small", "Too many pods")},
	}
	for _, c := range cases {
		createPod(t, cs, c.pod)
		if c.node != "" {
			if got := waitBound(t, cs, "default", c.pod.Name); got != c.node {
				t.Errorf("%s: bound to %s, want %s", c.pod.Name, got, c.node)
			}
			continue
		}
		if got := waitUnschedulable(t, cs, "default", c.pod.Name); got != c.message {
			t.Errorf("%s:\n got %q\nwant %q", c.pod.Name, got, c.message)
		}
	}
}

func TestSpreadsReplicasOfOneOwner(t *testing.T) {
	srv := apitest.Start(t)
	cs := srv.Kube
	// The big node wins on free resources alone: only spreading puts one
	// replica on each node.
	createNodes(t, cs, testNode("orchtest-big", 64, 256, 110, nil), testNode("orchtest-s1", 4, 8, 110, nil), testNode("orchtest-s2", 4, 8, 110, nil))
	startScheduler(t, cs, Config{})
	yes := true
	nodes := map[string]bool{}
	for i := 0; i < 3; i++ {
		p := testPod("default", fmt.Sprintf("web-%d", i), 100, 64)
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web", UID: types.UID("orchtest-rs-uid"), Controller: &yes}}
		createPod(t, cs, p)
	}
	for i := 0; i < 3; i++ {
		nodes[waitBound(t, cs, "default", fmt.Sprintf("web-%d", i))] = true
	}
	if len(nodes) != 3 {
		t.Fatalf("3 replicas on %d nodes: %v", len(nodes), nodes)
	}
}

func TestBurstDoesNotOverbook(t *testing.T) {
	srv := apitest.Start(t)
	cs := srv.Kube
	createNodes(t, cs, testNode("orchtest-n1", 2, 8, 110, nil), testNode("orchtest-n2", 2, 8, 110, nil), testNode("orchtest-n3", 2, 8, 110, nil))
	for i := 0; i < 10; i++ {
		createPod(t, cs, testPod("default", fmt.Sprintf("burst-%d", i), 1000, 0))
	}
	startScheduler(t, cs, Config{})
	var bound, unsched int
	waitFor(t, 20*time.Second, "6 bound, 4 unschedulable", func() (bool, error) {
		pods, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		bound, unsched = 0, 0
		per := map[string]int{}
		for _, p := range pods.Items {
			if p.Spec.NodeName != "" {
				bound++
				per[p.Spec.NodeName]++
				if per[p.Spec.NodeName] > 2 {
					return false, fmt.Errorf("node %s overbooked", p.Spec.NodeName)
				}
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
					unsched++
				}
			}
		}
		return bound == 6 && unsched == 4, nil
	})
	// Deleting a bound pod frees its cpu: one waiting pod takes it.
	pods, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" {
			if err := cs.CoreV1().Pods("default").Delete(context.Background(), p.Name, *metav1.NewDeleteOptions(0)); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	waitFor(t, 20*time.Second, "a waiting pod takes the freed cpu", func() (bool, error) {
		pods, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		n := 0
		for _, p := range pods.Items {
			if p.Spec.NodeName != "" {
				n++
			}
		}
		return n == 6 && len(pods.Items) == 9, nil
	})
}
