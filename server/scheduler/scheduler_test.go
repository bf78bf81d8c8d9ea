package scheduler

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/internal/kube/clientgo"
)

// fixture is a scheduler over a fake clientset whose informer caches the
// test fills by hand (sample-controller style).
type fixture struct {
	t      *testing.T
	client *fake.Clientset
	s      *Scheduler
}

func newFixture(t *testing.T, nodes []*corev1.Node, pods []*corev1.Pod) *fixture {
	var objs []runtime.Object
	for _, n := range nodes {
		objs = append(objs, n.DeepCopy())
	}
	for _, p := range pods {
		objs = append(objs, p.DeepCopy())
	}
	client := fake.NewClientset(objs...)
	f := kube.NewSharedInformerFactory(clientgo.Wrap(client), 0)
	s, err := New(Config{Recorder: record.NewFakeRecorder(100)}, clientgo.Wrap(client), f, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := f.Core().V1().Nodes().Informer().GetIndexer().Add(n); err != nil {
			t.Fatal(err)
		}
		s.nodeAdded(n)
	}
	for _, p := range pods {
		if err := f.Core().V1().Pods().Informer().GetIndexer().Add(p); err != nil {
			t.Fatal(err)
		}
		s.podAdded(p)
	}
	client.ClearActions()
	return &fixture{t: t, client: client, s: s}
}

func (f *fixture) run(key string) {
	f.s.scheduleOne(context.Background(), key)
	f.s.binds.Wait()
	f.flushReports()
}

// flushReports writes the queued reports now, without the reporter's rate.
func (f *fixture) flushReports() {
	for f.s.reports.queue.Len() > 0 {
		key, _ := f.s.reports.queue.Get()
		rep, ok := f.s.reports.take(key)
		f.s.reports.queue.Done(key)
		if ok {
			f.s.writeReport(context.Background(), key, rep)
		}
	}
}

func TestBindsThroughBindingSubresource(t *testing.T) {
	f := newFixture(t, []*corev1.Node{testNode("n1", 4, 8, 110, nil)}, []*corev1.Pod{testPod("default", "p", 100, 0)})
	f.run("default/p")
	acts := f.client.Actions()
	if len(acts) != 1 {
		t.Fatalf("actions: %v", acts)
	}
	a, ok := acts[0].(core.CreateAction)
	if !ok || a.GetSubresource() != "binding" || a.GetResource().Resource != "pods" {
		t.Fatalf("action %v", acts[0])
	}
	b := a.GetObject().(*corev1.Binding)
	if b.Name != "p" || b.Target.Name != "n1" || b.UID != "uid-default-p" {
		t.Fatalf("binding %+v", b)
	}
	if !f.s.cache.known("uid-default-p") {
		t.Fatal("bound pod not assumed")
	}
	ev := <-f.s.recorder.(*record.FakeRecorder).Events
	if ev != "Normal Scheduled Successfully assigned default/p to n1" {
		t.Fatalf("event %q", ev)
	}
}

func TestUnschedulablePatchesConditionOnce(t *testing.T) {
	p := testPod("default", "p", 8000, 0)
	f := newFixture(t, []*corev1.Node{testNode("n1", 4, 8, 110, nil)}, []*corev1.Pod{p})
	f.run("default/p")
	acts := f.client.Actions()
	if len(acts) != 1 || acts[0].GetSubresource() != "status" || acts[0].GetVerb() != "patch" {
		t.Fatalf("actions: %v", acts)
	}
	var patch struct {
		Status corev1.PodStatus `json:"status"`
	}
	if err := json.Unmarshal(acts[0].(core.PatchAction).GetPatch(), &patch); err != nil {
		t.Fatal(err)
	}
	c := patch.Status.Conditions[0]
	want := "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
	if c.Type != corev1.PodScheduled || c.Status != corev1.ConditionFalse || c.Reason != "Unschedulable" || c.Message != want {
		t.Fatalf("condition %+v", c)
	}
	if f.s.unsched.len() != 1 {
		t.Fatal("pod not parked")
	}
	// The informer sees the condition: a retry writes nothing new.
	p.Status.Conditions = []corev1.PodCondition{c}
	if err := f.s.pods.Update(p); err != nil {
		t.Fatal(err)
	}
	f.client.ClearActions()
	f.run("default/p")
	if acts := f.client.Actions(); len(acts) != 0 {
		t.Fatalf("repeat failure wrote %v", acts)
	}
	// A heartbeat does not wake parked pods; a new node does.
	old := testNode("n1", 4, 8, 110, nil)
	hb := old.DeepCopy()
	hb.Status.Conditions[0].LastHeartbeatTime.Time = hb.Status.Conditions[0].LastHeartbeatTime.Add(10e9)
	f.s.nodeUpdated(old, hb)
	if f.s.unsched.len() != 1 {
		t.Fatal("heartbeat flushed the parked pods")
	}
	f.s.nodeAdded(testNode("n2", 16, 8, 110, nil))
	if f.s.unsched.len() != 0 {
		t.Fatal("node add did not flush")
	}
}

func TestParkedPodsRetriedPeriodically(t *testing.T) {
	f := newFixture(t, []*corev1.Node{testNode("n1", 1, 8, 110, nil)}, []*corev1.Pod{testPod("default", "p", 8000, 0)})
	if !f.s.scheduleNext(context.Background()) || f.s.unsched.len() != 1 {
		t.Fatal("not parked")
	}
	f.s.unsched.moveOlder(time.Now().Add(-time.Hour), f.s.queue)
	if f.s.unsched.len() != 1 {
		t.Fatal("a fresh pod was retried")
	}
	f.s.unsched.moveOlder(time.Now().Add(time.Second), f.s.queue)
	if f.s.unsched.len() != 0 {
		t.Fatal("old pod not retried")
	}
	// It comes back after its back-off, not at once.
	if f.s.queue.Len() != 0 {
		t.Fatal("retried without back-off")
	}
	if f.s.queue.NumRequeues("default/p") != 1 {
		t.Fatalf("requeues %d", f.s.queue.NumRequeues("default/p"))
	}
}
