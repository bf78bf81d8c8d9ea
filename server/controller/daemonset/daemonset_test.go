package daemonset

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/orch-dev/orch/internal/apitest"
	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/server/scheduler"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func node(name string, labels map[string]string) *corev1.Node {
	alloc := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("4"),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{Allocatable: alloc, Capacity: alloc,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}},
	}
}

// cluster is an API server with the scheduler, the DaemonSet controller
// and a stand-in kubelet that starts bound pods (Ready) and finishes
// terminating ones.
func cluster(t *testing.T, nodes ...*corev1.Node) kube.Interface {
	t.Helper()
	srv := apitest.Start(t)
	cs := srv.Kube
	ctx, cancel := context.WithCancel(context.Background())
	for _, n := range nodes {
		if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f := kube.NewSharedInformerFactory(cs, 0)
	sched, err := scheduler.New(scheduler.Config{}, cs, f, quiet())
	if err != nil {
		t.Fatal(err)
	}
	dc, err := New(Config{}, cs, f, quiet())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 3)
	go func() { done <- sched.Run(ctx) }()
	go func() { done <- dc.Run(ctx, 2) }()
	go func() { done <- kubelet(ctx, cs) }()
	f.Start(ctx.Done())
	t.Cleanup(func() {
		cancel()
		for i := 0; i < 3; i++ {
			if err := <-done; err != nil {
				t.Errorf("component: %v", err)
			}
		}
		f.Shutdown()
	})
	return cs
}

func kubelet(ctx context.Context, cs kube.Interface) error {
	for ctx.Err() == nil {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err == nil {
			for i := range pods.Items {
				p := &pods.Items[i]
				switch {
				case p.Spec.NodeName == "":
				case p.DeletionTimestamp != nil:
					_ = cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, *metav1.NewDeleteOptions(0))
				case p.Status.Phase != corev1.PodRunning:
					p.Status.Phase = corev1.PodRunning
					p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()})
					_, _ = cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(30 * time.Millisecond):
		}
	}
	return nil
}

func daemonSet(name string, sel map[string]string) *appsv1.DaemonSet {
	lbls := map[string]string{"app": name}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{NodeSelector: sel, Containers: []corev1.Container{{
					Name: "c", Image: "busybox:stable", Env: []corev1.EnvVar{{Name: "V", Value: "1"}},
				}}},
			},
		},
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// podsByNode lists the DaemonSet's live pods by node.
func podsByNode(t *testing.T, cs kube.Interface, app string) map[string][]corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]corev1.Pod{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out[targetNode(&p)] = append(out[targetNode(&p)], p)
		}
	}
	return out
}

func getDS(t *testing.T, cs kube.Interface, name string) *appsv1.DaemonSet {
	t.Helper()
	ds, err := cs.AppsV1().DaemonSets("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func statusIs(t *testing.T, cs kube.Interface, name string, desired, updated, available int32) func() (bool, error) {
	return func() (bool, error) {
		ds := getDS(t, cs, name)
		s := ds.Status
		return s.ObservedGeneration == ds.Generation && s.DesiredNumberScheduled == desired && s.CurrentNumberScheduled == desired &&
			s.UpdatedNumberScheduled == updated && s.NumberReady == available && s.NumberAvailable == available &&
			s.NumberUnavailable == desired-available && s.NumberMisscheduled == 0, nil
	}
}

func TestDaemonSetNodeSelectorAndRollingUpdate(t *testing.T) {
	tainted := node("orchtest-ds-tainted", map[string]string{"ds": "yes"})
	tainted.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule}}
	cordoned := node("orchtest-ds-cordoned", map[string]string{"ds": "yes"})
	cordoned.Spec.Unschedulable = true
	cs := cluster(t,
		node("orchtest-ds-1", map[string]string{"ds": "yes"}),
		node("orchtest-ds-2", map[string]string{"ds": "yes"}),
		cordoned, tainted,
		node("orchtest-ds-other", nil),
	)
	ctx := context.Background()
	ds := daemonSet("agent", map[string]string{"ds": "yes"})
	if _, err := cs.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "3 daemon pods ready", statusIs(t, cs, "agent", 3, 3, 3))
	byNode := podsByNode(t, cs, "agent")
	for _, n := range []string{"orchtest-ds-1", "orchtest-ds-2", "orchtest-ds-cordoned"} {
		if len(byNode[n]) != 1 || byNode[n][0].Spec.NodeName != n {
			t.Fatalf("node %s: %d pods (%v)", n, len(byNode[n]), byNode)
		}
	}
	if len(byNode) != 3 {
		t.Fatalf("pods on %d nodes: %v", len(byNode), byNode)
	}
	first := byNode["orchtest-ds-1"][0]
	if first.Labels[hashLabel] == "" || first.OwnerReferences[0].Kind != "DaemonSet" {
		t.Fatalf("pod metadata %v %v", first.Labels, first.OwnerReferences)
	}
	hasTol := false
	for _, tol := range first.Spec.Tolerations {
		if tol.Key == corev1.TaintNodeUnreachable && tol.Effect == corev1.TaintEffectNoExecute && tol.TolerationSeconds == nil {
			hasTol = true
		}
	}
	if !hasTol {
		t.Fatalf("default tolerations missing: %v", first.Spec.Tolerations)
	}
	oldHash := first.Labels[hashLabel]

	// Rolling update, maxUnavailable 1: never two nodes down at once.
	cur := getDS(t, cs, "agent")
	cur.Spec.Template.Spec.Containers[0].Env[0].Value = "2"
	if _, err := cs.AppsV1().DaemonSets("default").Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "rollout", func() (bool, error) {
		byNode := podsByNode(t, cs, "agent")
		up := 0
		availableNodes := 0
		for _, ps := range byNode {
			for _, p := range ps {
				if p.Status.Phase == corev1.PodRunning {
					availableNodes++
					break
				}
			}
			for _, p := range ps {
				if p.Labels[hashLabel] != oldHash {
					up++
				}
			}
		}
		if availableNodes < 2 {
			return false, fmt.Errorf("%d nodes with a running pod during the rollout", availableNodes)
		}
		ok, err := statusIs(t, cs, "agent", 3, 3, 3)()
		return ok && up == 3, err
	})
	revs, err := cs.AppsV1().ControllerRevisions("default").List(ctx, metav1.ListOptions{LabelSelector: "app=agent"})
	if err != nil || len(revs.Items) != 2 {
		t.Fatalf("revisions: %v %v", err, revs)
	}

	// A node leaving the selector loses its pod.
	n, err := cs.CoreV1().Nodes().Get(ctx, "orchtest-ds-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(n.Labels, "ds")
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "pod removed from unlabelled node", statusIs(t, cs, "agent", 2, 2, 2))
	if ps := podsByNode(t, cs, "agent")["orchtest-ds-2"]; len(ps) != 0 {
		t.Fatalf("pods left on orchtest-ds-2: %d", len(ps))
	}
}

func TestDaemonSetSurgeAndOnDelete(t *testing.T) {
	cs := cluster(t, node("orchtest-dss-1", nil), node("orchtest-dss-2", nil))
	ctx := context.Background()
	surge := daemonSet("surge", nil)
	one, zero := intstr.FromInt32(1), intstr.FromInt32(0)
	surge.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxSurge: &one, MaxUnavailable: &zero}}
	manual := daemonSet("manual", nil)
	manual.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}
	for _, ds := range []*appsv1.DaemonSet{surge, manual} {
		if _, err := cs.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, ds.Name+" ready", statusIs(t, cs, ds.Name, 2, 2, 2))
		cur := getDS(t, cs, ds.Name)
		cur.Spec.Template.Spec.Containers[0].Env[0].Value = "2"
		if _, err := cs.AppsV1().DaemonSets("default").Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "surge rollout", statusIs(t, cs, "surge", 2, 2, 2))
	// OnDelete: nothing moves until a pod is deleted.
	waitFor(t, 10*time.Second, "OnDelete sees the new template", statusIs(t, cs, "manual", 2, 0, 2))
	time.Sleep(300 * time.Millisecond)
	if ok, _ := statusIs(t, cs, "manual", 2, 0, 2)(); !ok {
		t.Fatal("OnDelete DaemonSet replaced pods by itself")
	}
	victim := podsByNode(t, cs, "manual")["orchtest-dss-1"][0]
	if err := cs.CoreV1().Pods("default").Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "replacement of the new revision", statusIs(t, cs, "manual", 2, 1, 2))
}
