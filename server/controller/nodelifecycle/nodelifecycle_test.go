package nodelifecycle

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/orch-dev/orch/internal/apitest"
	"github.com/orch-dev/orch/internal/kube"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func readyNode(name string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()},
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, LastHeartbeatTime: metav1.Now()},
		}},
	}
}

func boundPod(name, node string, tols ...corev1.Toleration) *corev1.Pod {
	one := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.PodSpec{
			NodeName: node, Tolerations: tols, TerminationGracePeriodSeconds: &one,
			Containers: []corev1.Container{{Name: "c", Image: "busybox:stable"}},
		},
	}
}

// heartbeat is what the agent does: renew the Lease and the Ready condition.
func heartbeat(t *testing.T, cs kube.Interface, name string, ready corev1.ConditionStatus) {
	t.Helper()
	ctx := context.Background()
	now := metav1.NowMicro()
	l, err := cs.CoordinationV1().Leases(LeaseNamespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		holder := name
		_, err = cs.CoordinationV1().Leases(LeaseNamespace).Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: LeaseNamespace},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, RenewTime: &now},
		}, metav1.CreateOptions{})
	} else if err == nil {
		l.Spec.RenewTime = &now
		_, err = cs.CoordinationV1().Leases(LeaseNamespace).Update(ctx, l, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	// The controller writes the node too: retry on conflicts as an agent does.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for i := range n.Status.Conditions {
			c := &n.Status.Conditions[i]
			if c.Type == corev1.NodeReady {
				if c.Status != ready {
					c.LastTransitionTime = metav1.Now()
				}
				c.Status, c.Reason, c.Message = ready, "KubeletReady", ""
			} else {
				c.Status = corev1.ConditionFalse
			}
			c.LastHeartbeatTime = metav1.Now()
		}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("node status: %v", err)
	}
}

func setup(t *testing.T, cfg Config, nodes ...string) *apitest.Server {
	t.Helper()
	srv := apitest.Start(t)
	cs := srv.Kube
	for _, n := range nodes {
		if _, err := cs.CoreV1().Nodes().Create(context.Background(), readyNode(n), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		heartbeat(t, cs, n, corev1.ConditionTrue)
	}
	f := kube.NewSharedInformerFactory(cs, 0)
	c, err := New(cfg, cs, f, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, 2) }()
	f.Start(ctx.Done())
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		f.Shutdown()
	})
	return srv
}

func createPods(t *testing.T, cs kube.Interface, pods ...*corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		if _, err := cs.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
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

func hasTaint(n *corev1.Node, key string, effect corev1.TaintEffect) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key && t.Effect == effect {
			return true
		}
	}
	return false
}

func nodeState(t *testing.T, cs kube.Interface, name string, cond func(*corev1.Node) bool) func() (bool, error) {
	return func() (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return cond(n), nil
	}
}

func gone(cs kube.Interface, name string) func() (bool, error) {
	return func() (bool, error) {
		_, err := cs.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	}
}

func TestLeaseExpiryTaintsAndEvicts(t *testing.T) {
	cs := setup(t, Config{GracePeriod: time.Second, MonitorPeriod: 100 * time.Millisecond}, "orchtest-nl-1").Kube
	two := int64(2)
	createPods(t, cs,
		boundPod("short", "orchtest-nl-1", corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &two}),
		boundPod("long", "orchtest-nl-1"), // the API server's default 300 s
	)
	// No more heartbeats: Unknown, then tainted.
	start := time.Now()
	waitFor(t, 10*time.Second, "node unknown and tainted", nodeState(t, cs, "orchtest-nl-1", func(n *corev1.Node) bool {
		r := n.Status.Conditions[0]
		return r.Status == corev1.ConditionUnknown && r.Reason == "NodeStatusUnknown" && r.Message == "Kubelet stopped posting node status." &&
			hasTaint(n, corev1.TaintNodeUnreachable, corev1.TaintEffectNoExecute) && hasTaint(n, corev1.TaintNodeUnreachable, corev1.TaintEffectNoSchedule)
	}))
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Fatalf("marked unknown after %v, before the grace period", el)
	}
	// "short" goes 2 s after the taint was added (as recorded, to the
	// second) and, its node being unreachable, is force-deleted once its
	// 1 s grace period is over.
	var added time.Time
	n, err := cs.CoreV1().Nodes().Get(context.Background(), "orchtest-nl-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, taint := range n.Spec.Taints {
		if taint.Key == corev1.TaintNodeUnreachable && taint.Effect == corev1.TaintEffectNoExecute && taint.TimeAdded != nil {
			added = taint.TimeAdded.Time
		}
	}
	if added.IsZero() {
		t.Fatal("NoExecute taint without timeAdded")
	}
	waitFor(t, 15*time.Second, "short evicted and removed", gone(cs, "short"))
	if el := time.Since(added); el < 2*time.Second {
		t.Fatalf("short removed %v after the taint, before its tolerationSeconds", el)
	}
	p, err := cs.CoreV1().Pods("default").Get(context.Background(), "long", metav1.GetOptions{})
	if err != nil || p.DeletionTimestamp != nil {
		t.Fatalf("long: %v %v", err, p.DeletionTimestamp)
	}

	// The node comes back: taints removed.
	heartbeat(t, cs, "orchtest-nl-1", corev1.ConditionTrue)
	waitFor(t, 10*time.Second, "taints removed", nodeState(t, cs, "orchtest-nl-1", func(n *corev1.Node) bool { return len(n.Spec.Taints) == 0 }))

	// A NoExecute taint "long" does not tolerate evicts it at once.
	n, err = cs.CoreV1().Nodes().Get(context.Background(), "orchtest-nl-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "orchtest/evict", Effect: corev1.TaintEffectNoExecute})
	if _, err := cs.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "long marked for deletion", func() (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(context.Background(), "long", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return p.DeletionTimestamp != nil, nil
	})
}

func TestNotReadyConditionsAndCordonTaints(t *testing.T) {
	cs := setup(t, Config{GracePeriod: time.Minute, MonitorPeriod: 100 * time.Millisecond}, "orchtest-nl-2").Kube
	heartbeat(t, cs, "orchtest-nl-2", corev1.ConditionFalse)
	waitFor(t, 5*time.Second, "not-ready taints", nodeState(t, cs, "orchtest-nl-2", func(n *corev1.Node) bool {
		return hasTaint(n, corev1.TaintNodeNotReady, corev1.TaintEffectNoExecute) && hasTaint(n, corev1.TaintNodeNotReady, corev1.TaintEffectNoSchedule)
	}))
	// kubectl cordon is a patch of spec.unschedulable.
	if _, err := cs.CoreV1().Nodes().Patch(context.Background(), "orchtest-nl-2", types.StrategicMergePatchType,
		[]byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	heartbeat(t, cs, "orchtest-nl-2", corev1.ConditionTrue)
	waitFor(t, 5*time.Second, "only the cordon taint", nodeState(t, cs, "orchtest-nl-2", func(n *corev1.Node) bool {
		return len(n.Spec.Taints) == 1 && hasTaint(n, corev1.TaintNodeUnschedulable, corev1.TaintEffectNoSchedule)
	}))
	if _, err := cs.CoreV1().Nodes().Patch(context.Background(), "orchtest-nl-2", types.StrategicMergePatchType,
		[]byte(`{"spec":{"unschedulable":false}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "uncordoned", nodeState(t, cs, "orchtest-nl-2", func(n *corev1.Node) bool { return len(n.Spec.Taints) == 0 }))
}

func TestPodsOfDeletedNodeRemovedAndDrainEvicts(t *testing.T) {
	srv := setup(t, Config{GracePeriod: time.Minute, MonitorPeriod: 100 * time.Millisecond}, "orchtest-nl-3", "orchtest-nl-4")
	cs := srv.Kube
	createPods(t, cs, boundPod("orphan", "orchtest-nl-3"), boundPod("drained", "orchtest-nl-4"), boundPod("stays", "orchtest-nl-4"))
	if err := cs.CoreV1().Nodes().Delete(context.Background(), "orchtest-nl-3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "orphan removed", gone(cs, "orphan"))

	// kubectl drain: the eviction subresource through client-go.
	err := srv.Client.PolicyV1().Evictions("default").Evict(context.Background(), &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Name: "drained", Namespace: "default"},
	})
	if err != nil {
		t.Fatalf("evict: %v", err)
	}
	p, err := cs.CoreV1().Pods("default").Get(context.Background(), "drained", metav1.GetOptions{})
	if err == nil && p.DeletionTimestamp == nil {
		t.Fatal("evicted pod neither gone nor terminating")
	}
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("default").Get(context.Background(), "stays", metav1.GetOptions{}); err != nil {
		t.Fatalf("healthy pod touched: %v", err)
	}
}

func TestEvictIn(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &Controller{now: func() time.Time { return now }}
	secs := func(s int64) *int64 { return &s }
	added := metav1.NewTime(now.Add(-10 * time.Second))
	node := &corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{
		{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute, TimeAdded: &added},
		{Key: "soft", Effect: corev1.TaintEffectNoSchedule},
	}}}
	tol := func(s *int64) corev1.Toleration {
		return corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: s}
	}
	cases := []struct {
		name  string
		tols  []corev1.Toleration
		wait  time.Duration
		evict bool
	}{
		{"untolerated", nil, 0, true},
		{"forever", []corev1.Toleration{tol(nil)}, 0, false},
		{"pending", []corev1.Toleration{tol(secs(300))}, 290 * time.Second, true},
		{"expired", []corev1.Toleration{tol(secs(5))}, 0, true},
		{"shortest wins", []corev1.Toleration{tol(nil), tol(secs(60)), tol(secs(30))}, 20 * time.Second, true},
		{"wildcard", []corev1.Toleration{{Operator: corev1.TolerationOpExists}}, 0, false},
	}
	for _, tc := range cases {
		wait, evict := c.evictIn(&corev1.Pod{Spec: corev1.PodSpec{Tolerations: tc.tols}}, node)
		if wait != tc.wait || evict != tc.evict {
			t.Errorf("%s: got (%v, %v), want (%v, %v)", tc.name, wait, evict, tc.wait, tc.evict)
		}
	}
}

func TestDesiredTaintsKeepsOthersAndTimes(t *testing.T) {
	now := time.Now()
	old := metav1.NewTime(now.Add(-time.Hour))
	node := &corev1.Node{
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			{Key: "user", Value: "x", Effect: corev1.TaintEffectNoSchedule},
			{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute, TimeAdded: &old},
		}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown}}},
	}
	taints, changed := desiredTaints(node, now)
	if !changed || len(taints) != 3 {
		t.Fatalf("taints %v changed %v", taints, changed)
	}
	if !taints[1].TimeAdded.Equal(&old) {
		t.Fatal("existing NoExecute taint lost its time")
	}
	node.Spec.Taints = taints
	if _, changed := desiredTaints(node, now); changed {
		t.Fatal("not idempotent")
	}
	node.Status.Conditions[0].Status = corev1.ConditionTrue
	taints, _ = desiredTaints(node, now)
	if len(taints) != 1 || taints[0].Key != "user" {
		t.Fatalf("after recovery: %v", taints)
	}
}
