package namespace

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	metafake "k8s.io/client-go/metadata/fake"
	core "k8s.io/client-go/testing"

	fixt "github.com/orch-dev/orch/server/controller/internal/fixture"
	"github.com/orch-dev/orch/server/controller/internal/kit"
)

var cmGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

func setup(t *testing.T, content ...runtime.Object) (*fixt.Fixture, *metafake.FakeMetadataClient, *Controller) {
	now := metav1.Now()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gone", DeletionTimestamp: &now},
		Spec:   corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}}
	fx := fixt.New(t, ns)
	fx.Client.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{
		GroupVersion: "v1",
		APIResources: []metav1.APIResource{
			{Name: "configmaps", Kind: "ConfigMap", Namespaced: true, Verbs: []string{"list", "delete", "get"}},
			{Name: "nodes", Kind: "Node", Namespaced: false, Verbs: []string{"list", "delete"}},
		},
	}}
	scheme := metafake.NewTestScheme()
	scheme.AddKnownTypeWithName(cmGVR.GroupVersion().WithKind("ConfigMap"), &metav1.PartialObjectMetadata{})
	scheme.AddKnownTypeWithName(cmGVR.GroupVersion().WithKind("ConfigMapList"), &metav1.PartialObjectMetadataList{})
	meta := metafake.NewSimpleMetadataClient(scheme, content...)
	c, err := New(Config{}, fx.Kube, meta, fx.Client.Discovery(), fx.Informers, fx.Log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.queue.ShutDown)
	fx.Start()
	return fx, meta, c
}

func cm(name string, finalizers ...string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "gone", UID: "uid-" + "cm", Finalizers: finalizers}}
}

func TestEmptiesThenFinalizes(t *testing.T) {
	fx, meta, c := setup(t, cm("a"))
	if err := c.sync(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	deleted := false
	for _, a := range meta.Actions() {
		if a.GetVerb() == "delete" && a.(core.DeleteAction).GetName() == "a" {
			deleted = true
		}
	}
	if !deleted {
		t.Fatalf("content not deleted: %v", meta.Actions())
	}
	finalized := false
	for _, a := range fx.Writes() {
		if a.GetSubresource() == "finalize" {
			ns := a.(core.UpdateAction).GetObject().(*corev1.Namespace)
			finalized = len(ns.Spec.Finalizers) == 0
		}
	}
	if !finalized {
		t.Fatalf("not finalized: %v", fx.Writes())
	}
}

func TestWaitsForHeldContent(t *testing.T) {
	held := cm("held", "example.com/hold")
	now := metav1.Now()
	held.DeletionTimestamp = &now
	fx, _, c := setup(t, held)
	err := c.sync(context.Background(), "gone")
	var re *kit.RequeueAfter
	if !errors.As(err, &re) || re.Delay != 2*time.Second {
		t.Fatalf("sync error %v, want a requeue", err)
	}
	var conds []corev1.NamespaceCondition
	for _, a := range fx.Writes() {
		if a.GetSubresource() == "finalize" {
			t.Fatal("finalized with content left")
		}
		if a.GetSubresource() == "status" {
			conds = a.(core.UpdateAction).GetObject().(*corev1.Namespace).Status.Conditions
		}
	}
	found := map[corev1.NamespaceConditionType]corev1.ConditionStatus{}
	for _, c := range conds {
		found[c.Type] = c.Status
	}
	if found[CondContentLeft] != corev1.ConditionTrue || found[CondFinalizersLeft] != corev1.ConditionTrue || found[CondContentFailure] != corev1.ConditionFalse {
		t.Fatalf("conditions %v", conds)
	}
}
