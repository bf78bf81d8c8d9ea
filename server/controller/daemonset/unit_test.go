package daemonset

import (
	"context"
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/internal/kube/clientgo"
)

// fixture: the controller over a fake clientset with informer caches
// filled by hand (sample-controller style).
type fixture struct {
	t      *testing.T
	client *fake.Clientset
	c      *Controller
	f      *kube.SharedInformerFactory
}

func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	client := fake.NewClientset(objs...)
	// The fake tracker does not generate names.
	var n atomic.Int64
	client.PrependReactor("create", "pods", func(a core.Action) (bool, runtime.Object, error) {
		if p := a.(core.CreateAction).GetObject().(*corev1.Pod); p.Name == "" {
			p.Name = fmt.Sprintf("%s%d", p.GenerateName, n.Add(1))
		}
		return false, nil, nil
	})
	f := kube.NewSharedInformerFactory(clientgo.Wrap(client), 0)
	c, err := New(Config{Recorder: record.NewFakeRecorder(100)}, clientgo.Wrap(client), f, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Node:
			err = f.Core().V1().Nodes().Informer().GetIndexer().Add(o)
		case *corev1.Pod:
			err = f.Core().V1().Pods().Informer().GetIndexer().Add(o)
		case *appsv1.DaemonSet:
			err = f.Apps().V1().DaemonSets().Informer().GetIndexer().Add(o)
		case *appsv1.ControllerRevision:
			err = f.Apps().V1().ControllerRevisions().Informer().GetIndexer().Add(o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return &fixture{t: t, client: client, c: c, f: f}
}

func (f *fixture) sync(key string) {
	f.t.Helper()
	if err := f.c.sync(context.Background(), key); err != nil {
		f.t.Fatalf("sync: %v", err)
	}
}

func (f *fixture) created(resource string) []runtime.Object {
	var out []runtime.Object
	for _, a := range f.client.Actions() {
		if a.GetVerb() == "create" && a.GetResource().Resource == resource {
			out = append(out, a.(core.CreateAction).GetObject())
		}
	}
	return out
}

func withUID(ds *appsv1.DaemonSet) *appsv1.DaemonSet {
	ds.UID = "ds-uid"
	ds.Generation = 1
	ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType}
	return ds
}

func TestSyncCreatesPinnedPodsOnEligibleNodes(t *testing.T) {
	ds := withUID(daemonSet("agent", map[string]string{"ds": "yes"}))
	noExec := node("tainted", map[string]string{"ds": "yes"})
	noExec.Spec.Taints = []corev1.Taint{{Key: "x", Effect: corev1.TaintEffectNoExecute}}
	notReady := node("notready", map[string]string{"ds": "yes"})
	notReady.Spec.Taints = []corev1.Taint{{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoExecute}}
	f := newFixture(t, ds, node("a", map[string]string{"ds": "yes"}), node("b", nil), noExec, notReady)
	f.sync("default/agent")
	revs := f.created("controllerrevisions")
	if len(revs) != 1 {
		t.Fatalf("revisions created: %d", len(revs))
	}
	hash := revs[0].(*appsv1.ControllerRevision).Labels[hashLabel]
	var nodes []string
	for _, o := range f.created("pods") {
		p := o.(*corev1.Pod)
		if p.Labels[hashLabel] != hash || p.Labels["app"] != "agent" {
			t.Errorf("labels %v", p.Labels)
		}
		nodes = append(nodes, targetNode(p))
	}
	sort.Strings(nodes)
	if len(nodes) != 2 || nodes[0] != "a" || nodes[1] != "notready" {
		t.Fatalf("pods for nodes %v, want [a notready]", nodes)
	}
}

func TestSyncDeletesDuplicatesAndStrays(t *testing.T) {
	ds := withUID(daemonSet("agent", nil))
	f0 := newFixture(t, ds.DeepCopy(), node("a", nil))
	f0.sync("default/agent")
	hash := f0.created("controllerrevisions")[0].(*appsv1.ControllerRevision)
	mk := func(name, nodeName string, age time.Duration) *corev1.Pod {
		p := newPod(ds, nodeName, hash.Labels[hashLabel])
		p.Name, p.GenerateName = name, ""
		p.UID = types.UID("uid-" + name)
		p.Spec.NodeName = nodeName
		p.CreationTimestamp = metav1.NewTime(time.Now().Add(-age))
		return p
	}
	f := newFixture(t, ds, hash, node("a", nil), mk("old", "a", time.Hour), mk("dup", "a", time.Minute), mk("stray", "gone", time.Hour))
	f.sync("default/agent")
	var deleted []string
	for _, a := range f.client.Actions() {
		if a.GetVerb() == "delete" && a.GetResource().Resource == "pods" {
			deleted = append(deleted, a.(core.DeleteAction).GetName())
		}
	}
	sort.Strings(deleted)
	if len(deleted) != 2 || deleted[0] != "dup" || deleted[1] != "stray" {
		t.Fatalf("deleted %v, want [dup stray]", deleted)
	}
	if n := len(f.created("pods")); n != 0 {
		t.Fatalf("created %d pods while deleting", n)
	}
}

func TestPlacementCheck(t *testing.T) {
	ds := daemonSet("x", map[string]string{"role": "edge"})
	p := newPlacement(ds)
	edge := node("n", map[string]string{"role": "edge"})
	if run, cont := p.check(node("n", nil)); run || cont {
		t.Error("selector ignored")
	}
	if run, cont := p.check(edge); !run || !cont {
		t.Error("eligible node refused")
	}
	edge.Spec.Taints = []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}
	if run, cont := p.check(edge); run || !cont {
		t.Errorf("NoSchedule: run=%v continue=%v, want false true", run, cont)
	}
	edge.Spec.Taints = []corev1.Taint{{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodeMemoryPressure, Effect: corev1.TaintEffectNoSchedule}}
	if run, _ := p.check(edge); !run {
		t.Error("default tolerations missing")
	}
}

func TestMaxUnavailableAndSurgeScaling(t *testing.T) {
	ds := daemonSet("x", nil)
	pct := intstr.FromString("30%")
	zero := intstr.FromInt32(0)
	ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &pct, MaxSurge: &zero}}
	if got := maxUnavailable(ds, 10); got != 3 {
		t.Errorf("30%% of 10 = %d", got)
	}
	ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = &zero
	if got := maxUnavailable(ds, 10); got != 1 {
		t.Errorf("both zero: %d, want 1", got)
	}
	ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge = &pct
	if maxUnavailable(ds, 10) != 0 || maxSurge(ds, 10) != 3 {
		t.Error("surge scaling")
	}
}

func TestTemplateHashStable(t *testing.T) {
	a, err := revisionData(daemonSet("x", nil))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := revisionData(daemonSet("x", nil))
	one := int32(1)
	if templateHash(a, nil) != templateHash(b, nil) || templateHash(a, nil) == templateHash(a, &one) {
		t.Fatal("hash not stable or ignores collisions")
	}
	ds := daemonSet("x", nil)
	ds.Spec.Template.Spec.Containers[0].Image = "other"
	c, _ := revisionData(ds)
	if sameData(a, c) || !sameData(a, b) {
		t.Fatal("sameData")
	}
}

func TestFailedPodReplacedAfterBackoff(t *testing.T) {
	ds := withUID(daemonSet("agent", nil))
	f0 := newFixture(t, ds.DeepCopy(), node("a", nil))
	f0.sync("default/agent")
	rev := f0.created("controllerrevisions")[0].(*appsv1.ControllerRevision)
	p := newPod(ds, "a", rev.Labels[hashLabel])
	p.Name, p.GenerateName, p.UID, p.Spec.NodeName = "failed", "", "uid-failed", "a"
	p.Status.Phase = corev1.PodFailed
	f := newFixture(t, ds, rev, node("a", nil), p)
	f.sync("default/agent")
	deleted := false
	for _, a := range f.client.Actions() {
		if a.GetVerb() == "delete" && a.GetResource().Resource == "pods" && a.(core.DeleteAction).GetName() == "failed" {
			deleted = true
		}
	}
	if !deleted {
		t.Fatal("failed pod not deleted")
	}
	if w := f.c.failed.wait("default/agent/a", time.Now()); w <= 0 {
		t.Fatal("no back-off before the replacement")
	}
}
