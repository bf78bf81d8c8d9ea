package deployment

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	fixt "github.com/orch-dev/orch/server/controller/internal/fixture"
)

func newFixture(t *testing.T, objs ...runtime.Object) (*fixt.Fixture, *Controller) {
	fx := fixt.New(t, objs...)
	c, err := New(Config{Recorder: record.NewFakeRecorder(100)}, fx.Kube, fx.Informers, fx.Log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.queue.ShutDown)
	fx.Start()
	return fx, c
}

func newDeployment(replicas int32) *appsv1.Deployment {
	lbl := map[string]string{"app": "web"}
	d := rolling(replicas, intstr.FromInt32(1), intstr.FromInt32(0))
	d.ObjectMeta = metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "d-uid", Generation: 1, Annotations: map[string]string{"team": "a"}}
	d.Spec.Selector = &metav1.LabelSelector{MatchLabels: lbl}
	d.Spec.Template = corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbl},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i:1"}}}}
	deadline := int32(600)
	d.Spec.ProgressDeadlineSeconds = &deadline
	limit := int32(1)
	d.Spec.RevisionHistoryLimit = &limit
	return d
}

func TestNewDeploymentCreatesReplicaSet(t *testing.T) {
	d := newDeployment(3)
	fx, c := newFixture(t, d)
	if err := c.sync(context.Background(), "ns/web"); err != nil {
		t.Fatal(err)
	}
	var rs *appsv1.ReplicaSet
	var revision string
	var progressing *appsv1.DeploymentCondition
	for _, a := range fx.Writes() {
		switch {
		case a.GetVerb() == "create" && a.GetResource().Resource == "replicasets":
			rs = a.(core.CreateAction).GetObject().(*appsv1.ReplicaSet)
		case a.GetVerb() == "update" && a.GetResource().Resource == "deployments" && a.GetSubresource() == "":
			revision = a.(core.UpdateAction).GetObject().(*appsv1.Deployment).Annotations[RevisionAnnotation]
		case a.GetVerb() == "update" && a.GetSubresource() == "status":
			st := a.(core.UpdateAction).GetObject().(*appsv1.Deployment).Status
			if c := condition(&st, appsv1.DeploymentProgressing); c != nil {
				progressing = c
			}
		}
	}
	if rs == nil {
		t.Fatalf("no replica set created: %v", fx.Writes())
	}
	hash := TemplateHash(&d.Spec.Template, nil)
	if rs.Name != "web-"+hash || rs.Labels[HashLabel] != hash || rs.Spec.Template.Labels[HashLabel] != hash ||
		rs.Spec.Selector.MatchLabels[HashLabel] != hash || rs.Spec.Selector.MatchLabels["app"] != "web" {
		t.Fatalf("replica set %s labels %v selector %v", rs.Name, rs.Labels, rs.Spec.Selector)
	}
	// New deployments start at full size: nothing else runs (surge allows 4).
	if *rs.Spec.Replicas != 3 {
		t.Fatalf("replicas %d", *rs.Spec.Replicas)
	}
	if rs.Annotations[RevisionAnnotation] != "1" || rs.Annotations[DesiredReplicasAnnotation] != "3" || rs.Annotations[MaxReplicasAnnotation] != "4" || rs.Annotations["team"] != "a" {
		t.Fatalf("annotations %v", rs.Annotations)
	}
	if ref := metav1.GetControllerOf(rs); ref == nil || ref.UID != "d-uid" {
		t.Fatalf("owner %v", ref)
	}
	if revision != "1" {
		t.Fatalf("deployment revision %q", revision)
	}
	if progressing == nil || progressing.Reason != ReasonNewRSCreated {
		t.Fatalf("progressing %+v", progressing)
	}
}

func rsFor(d *appsv1.Deployment, image string, replicas, available int32, rev string) *appsv1.ReplicaSet {
	tmpl := d.Spec.Template.DeepCopy()
	tmpl.Spec.Containers[0].Image = image
	hash := TemplateHash(tmpl, nil)
	tmpl.Labels = map[string]string{"app": "web", HashLabel: hash}
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-" + hash, Namespace: "ns", UID: types.UID("uid-" + hash), Labels: tmpl.Labels,
			Annotations:     map[string]string{RevisionAnnotation: rev, DesiredReplicasAnnotation: "3", MaxReplicasAnnotation: "4"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: d.UID, Controller: ptrTrue()}}},
		Spec:   appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: *tmpl},
		Status: appsv1.ReplicaSetStatus{Replicas: replicas, ReadyReplicas: available, AvailableReplicas: available},
	}
}

func ptrTrue() *bool { t := true; return &t }

func TestRollingStepRespectsMaxUnavailableZero(t *testing.T) {
	d := newDeployment(3)
	d.Spec.Template.Spec.Containers[0].Image = "i:2"
	old := rsFor(d, "i:1", 3, 3, "1")
	fx, c := newFixture(t, d, old)
	if err := c.sync(context.Background(), "ns/web"); err != nil {
		t.Fatal(err)
	}
	// First step: new RS at 1 (surge 1), old untouched (maxUnavailable 0).
	created := false
	for _, a := range fx.Writes() {
		if a.GetResource().Resource != "replicasets" {
			continue
		}
		rs := a.(interface{ GetObject() runtime.Object }).GetObject().(*appsv1.ReplicaSet)
		if rs.UID == old.UID && *rs.Spec.Replicas < 3 {
			t.Fatalf("old replica set scaled to %d before new pods are available", *rs.Spec.Replicas)
		}
		created = created || a.GetVerb() == "create"
		if a.GetVerb() == "create" && (*rs.Spec.Replicas != 1 || rs.Annotations[RevisionAnnotation] != "2") {
			t.Fatalf("new rs replicas %d revision %s", *rs.Spec.Replicas, rs.Annotations[RevisionAnnotation])
		}
	}
	if !created {
		t.Fatal("no new replica set")
	}
}

func TestCleanupKeepsHistoryLimit(t *testing.T) {
	d := newDeployment(3)
	cur := rsFor(d, "i:1", 3, 3, "3")
	old1 := rsFor(d, "i:old1", 0, 0, "1")
	old2 := rsFor(d, "i:old2", 0, 0, "2")
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3, ReadyReplicas: 3}
	fx, c := newFixture(t, d, cur, old1, old2)
	if err := c.sync(context.Background(), "ns/web"); err != nil {
		t.Fatal(err)
	}
	var deleted []string
	for _, a := range fx.Writes() {
		if a.GetVerb() == "delete" {
			deleted = append(deleted, a.(core.DeleteAction).GetName())
		}
	}
	if len(deleted) != 1 || deleted[0] != old1.Name {
		t.Fatalf("deleted %v, want the revision 1 set %s", deleted, old1.Name)
	}
}
