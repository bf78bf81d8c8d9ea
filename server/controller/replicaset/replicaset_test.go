package replicaset

import (
	"context"
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	fixt "github.com/orch-dev/orch/server/controller/internal/fixture"
)

// fixture is a controller over a fake clientset whose caches hold objs.
type fixture struct {
	*fixt.Fixture
	c   *Controller
	rec *record.FakeRecorder
}

func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	fx := fixt.New(t, objs...)
	rec := record.NewFakeRecorder(100)
	c, err := New(Config{Recorder: rec}, fx.Kube, fx.Informers, fx.Log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.queue.ShutDown)
	fx.Start()
	return &fixture{Fixture: fx, c: c, rec: rec}
}

func newRS(name string, replicas int32) *appsv1.ReplicaSet {
	lbl := map[string]string{"app": name}
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: "rs-uid", Generation: 2},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: lbl},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbl},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}},
		},
	}
}

func ownedPod(rs *appsv1.ReplicaSet, name string, phase corev1.PodPhase, ready bool) *corev1.Pod {
	p := PodFromTemplate(rs)
	p.Name, p.GenerateName, p.UID = name, "", types.UID("uid-"+name)
	p.Status.Phase = phase
	if ready {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}
	if phase != corev1.PodPending {
		p.Spec.NodeName = "n1"
	}
	return p
}

func TestCreatesPodsAndStatus(t *testing.T) {
	rs := newRS("web", 3)
	f := newFixture(t, rs)
	if err := f.c.sync(context.Background(), "ns/web"); err != nil {
		t.Fatal(err)
	}
	creates, statuses := 0, 0
	for _, a := range f.Writes() {
		switch {
		case a.GetVerb() == "create" && a.GetResource().Resource == "pods":
			p := a.(core.CreateAction).GetObject().(*corev1.Pod)
			ref := metav1.GetControllerOf(p)
			if p.GenerateName != "web-" || ref == nil || ref.UID != "rs-uid" || !*ref.BlockOwnerDeletion || p.Labels["app"] != "web" {
				t.Fatalf("pod %+v", p.ObjectMeta)
			}
			creates++
		case a.GetVerb() == "update" && a.GetSubresource() == "status":
			st := a.(core.UpdateAction).GetObject().(*appsv1.ReplicaSet).Status
			if st.ObservedGeneration != 2 || st.Replicas != 0 {
				t.Fatalf("status %+v", st)
			}
			statuses++
		}
	}
	if creates != 3 || statuses != 1 {
		t.Fatalf("creates %d statuses %d: %v", creates, statuses, f.Writes())
	}
	// Until the informer shows the pods, a second sync creates nothing.
	f.Client.ClearActions()
	if err := f.c.sync(context.Background(), "ns/web"); err != nil {
		t.Fatal(err)
	}
	for _, a := range f.Writes() {
		if a.GetVerb() == "create" {
			t.Fatalf("created again while expectations are pending: %v", a)
		}
	}
}

func TestCreateFailureSetsConditionAndBacksOff(t *testing.T) {
	rs := newRS("web", 5)
	f := newFixture(t, rs)
	f.Client.PrependReactor("create", "pods", func(core.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("exceeded quota"))
	})
	err := f.c.sync(context.Background(), "ns/web")
	if err == nil || !strings.Contains(err.Error(), "exceeded quota") {
		t.Fatalf("sync error %v", err)
	}
	creates := 0
	var cond *appsv1.ReplicaSetCondition
	for _, a := range f.Writes() {
		if a.GetVerb() == "create" {
			creates++
		}
		if a.GetSubresource() == "status" {
			st := a.(core.UpdateAction).GetObject().(*appsv1.ReplicaSet).Status
			for i := range st.Conditions {
				cond = &st.Conditions[i]
			}
		}
	}
	if creates != 1 {
		t.Fatalf("slow start tried %d creates, want 1", creates)
	}
	if cond == nil || cond.Type != appsv1.ReplicaSetReplicaFailure || cond.Reason != "FailedCreate" {
		t.Fatalf("condition %+v", cond)
	}
	select {
	case ev := <-f.rec.Events:
		if !strings.Contains(ev, "FailedCreate") {
			t.Fatalf("event %q", ev)
		}
	default:
		t.Fatal("no event")
	}
	// Expectations were lowered: the next sync tries again (the work queue
	// spaces the retries out).
	if !f.c.exp.Satisfied("ns/web") {
		t.Fatal("failed creations still expected")
	}
}

func TestDeletesLeastUsefulFirst(t *testing.T) {
	rs := newRS("web", 1)
	objs := []runtime.Object{rs,
		ownedPod(rs, "ready", corev1.PodRunning, true),
		ownedPod(rs, "pending", corev1.PodPending, false),
		ownedPod(rs, "notready", corev1.PodRunning, false),
	}
	f := newFixture(t, objs...)
	if err := f.c.sync(context.Background(), "ns/web"); err != nil {
		t.Fatal(err)
	}
	deleted := map[string]bool{}
	for _, a := range f.Writes() {
		if a.GetVerb() == "delete" {
			deleted[a.(core.DeleteAction).GetName()] = true
		}
	}
	if len(deleted) != 2 || !deleted["pending"] || !deleted["notready"] {
		t.Fatalf("deleted %v", deleted)
	}
}

func TestAdoptsAndReleases(t *testing.T) {
	rs := newRS("web", 2)
	orphan := ownedPod(rs, "orphan", corev1.PodRunning, true)
	orphan.OwnerReferences = nil
	stray := ownedPod(rs, "stray", corev1.PodRunning, true)
	stray.Labels = map[string]string{"app": "other"}
	f := newFixture(t, rs, orphan, stray)
	if err := f.c.sync(context.Background(), "ns/web"); err != nil {
		t.Fatal(err)
	}
	patched := map[string]string{}
	creates := 0
	for _, a := range f.Writes() {
		switch a.GetVerb() {
		case "patch":
			pa := a.(core.PatchAction)
			patched[pa.GetName()] = string(pa.GetPatch())
		case "create":
			creates++
		}
	}
	if !strings.Contains(patched["orphan"], `"controller":true`) || !strings.Contains(patched["stray"], `"$patch":"delete"`) {
		t.Fatalf("patches %v", patched)
	}
	if creates != 1 {
		t.Fatalf("creates %d, want 1 (one adopted pod counts)", creates)
	}
}
