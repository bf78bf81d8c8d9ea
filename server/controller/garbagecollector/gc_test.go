package garbagecollector

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	metafake "k8s.io/client-go/metadata/fake"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/internal/kube/clientgo"
	"github.com/orch-dev/orch/server/controller/internal/discover"
)

var (
	rsGVR  = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}
	podGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
)

func obj(gvr schema.GroupVersionResource, kind, name string, uid types.UID, owners ...metav1.OwnerReference) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: gvr.GroupVersion().String(), Kind: kind},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: uid, ResourceVersion: "5", OwnerReferences: owners},
	}
}

func ref(name string, uid types.UID, block bool) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name, UID: uid, BlockOwnerDeletion: &block}
}

// newGC is a collector whose caches hold cached and whose API holds live.
func newGC(t *testing.T, cached []*metav1.PartialObjectMetadata, live ...runtime.Object) (*Controller, *metafake.FakeMetadataClient) {
	scheme := metafake.NewTestScheme()
	scheme.AddKnownTypeWithName(rsGVR.GroupVersion().WithKind("ReplicaSet"), &metav1.PartialObjectMetadata{})
	scheme.AddKnownTypeWithName(podGVR.GroupVersion().WithKind("Pod"), &metav1.PartialObjectMetadata{})
	meta := metafake.NewSimpleMetadataClient(scheme, live...)
	cs := fake.NewClientset()
	c, err := New(Config{}, clientgo.Wrap(cs), meta, cs.Discovery(), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.queue.ShutDown)
	c.resources = discover.New([]discover.Resource{
		{GVR: rsGVR, Kind: "ReplicaSet", Namespaced: true},
		{GVR: podGVR, Kind: "Pod", Namespaced: true},
	})
	for _, gvr := range []schema.GroupVersionResource{rsGVR, podGVR} {
		c.stores[gvr] = cache.NewStore(cache.MetaNamespaceKeyFunc)
	}
	for _, o := range cached {
		gvr := podGVR
		if o.Kind == "ReplicaSet" {
			gvr = rsGVR
		}
		if err := c.stores[gvr].Add(o); err != nil {
			t.Fatal(err)
		}
		c.observe(gvr, nil, o)
	}
	meta.ClearActions()
	return c, meta
}

func writes(m *metafake.FakeMetadataClient) []core.Action {
	var out []core.Action
	for _, a := range m.Actions() {
		if a.GetVerb() != "get" && a.GetVerb() != "list" {
			out = append(out, a)
		}
	}
	return out
}

func key(gvr schema.GroupVersionResource, name string) string {
	return node{gvr: gvr, namespace: "ns", name: name}.key()
}

func TestDeletesDependentOfGoneOwner(t *testing.T) {
	pod := obj(podGVR, "Pod", "p", "pod-uid", ref("rs", "rs-uid", true))
	c, meta := newGC(t, []*metav1.PartialObjectMetadata{pod})
	if err := c.sync(context.Background(), key(podGVR, "p")); err != nil {
		t.Fatal(err)
	}
	w := writes(meta)
	if len(w) != 1 || w[0].GetVerb() != "delete" {
		t.Fatalf("actions %v", w)
	}
	opts := w[0].(core.DeleteActionImpl).DeleteOptions
	if *opts.PropagationPolicy != metav1.DeletePropagationBackground || *opts.Preconditions.UID != "pod-uid" {
		t.Fatalf("delete options %+v", opts)
	}
}

func TestKeepsDependentOfLiveOwnerFoundByAPI(t *testing.T) {
	// The owner is not cached yet (informer lag) but exists.
	pod := obj(podGVR, "Pod", "p", "pod-uid", ref("rs", "rs-uid", true))
	c, meta := newGC(t, []*metav1.PartialObjectMetadata{pod}, obj(rsGVR, "ReplicaSet", "rs", "rs-uid"))
	if err := c.sync(context.Background(), key(podGVR, "p")); err != nil {
		t.Fatal(err)
	}
	if w := writes(meta); len(w) != 0 {
		t.Fatalf("actions %v", w)
	}
}

func TestDropsReferenceToGoneOwnerWhenAnotherRemains(t *testing.T) {
	live := obj(rsGVR, "ReplicaSet", "a", "a-uid")
	pod := obj(podGVR, "Pod", "p", "pod-uid", ref("a", "a-uid", false), ref("b", "b-uid", false))
	c, meta := newGC(t, []*metav1.PartialObjectMetadata{live, pod}, pod)
	if err := c.sync(context.Background(), key(podGVR, "p")); err != nil {
		t.Fatal(err)
	}
	w := writes(meta)
	if len(w) != 1 || w[0].GetVerb() != "patch" {
		t.Fatalf("actions %v", w)
	}
	p := string(w[0].(core.PatchAction).GetPatch())
	if !strings.Contains(p, "a-uid") || strings.Contains(p, "b-uid") || !strings.Contains(p, `"resourceVersion":"5"`) {
		t.Fatalf("patch %s", p)
	}
}

func TestOrphanFinalizer(t *testing.T) {
	owner := obj(rsGVR, "ReplicaSet", "rs", "rs-uid")
	now := metav1.Now()
	owner.DeletionTimestamp = &now
	owner.Finalizers = []string{metav1.FinalizerOrphanDependents}
	pod := obj(podGVR, "Pod", "p", "pod-uid", ref("rs", "rs-uid", true))
	c, meta := newGC(t, []*metav1.PartialObjectMetadata{owner, pod}, owner, pod)
	if err := c.sync(context.Background(), key(rsGVR, "rs")); err != nil {
		t.Fatal(err)
	}
	w := writes(meta)
	if len(w) != 2 {
		t.Fatalf("actions %v", w)
	}
	first, second := w[0].(core.PatchAction), w[1].(core.PatchAction)
	if first.GetName() != "p" || !strings.Contains(string(first.GetPatch()), `"ownerReferences":null`) {
		t.Fatalf("dependent patch %s %s", first.GetName(), first.GetPatch())
	}
	if second.GetName() != "rs" || !strings.Contains(string(second.GetPatch()), `"finalizers":null`) {
		t.Fatalf("owner patch %s %s", second.GetName(), second.GetPatch())
	}
}

func TestForegroundDeletesBlockingDependentsFirst(t *testing.T) {
	owner := obj(rsGVR, "ReplicaSet", "rs", "rs-uid")
	now := metav1.Now()
	owner.DeletionTimestamp = &now
	owner.Finalizers = []string{metav1.FinalizerDeleteDependents}
	pod := obj(podGVR, "Pod", "p", "pod-uid", ref("rs", "rs-uid", true))
	c, meta := newGC(t, []*metav1.PartialObjectMetadata{owner, pod}, owner, pod)
	if err := c.sync(context.Background(), key(rsGVR, "rs")); err != nil {
		t.Fatal(err)
	}
	w := writes(meta)
	if len(w) != 1 || w[0].GetVerb() != "delete" || w[0].(core.DeleteActionImpl).Name != "p" {
		t.Fatalf("actions %v", w)
	}
	if p := w[0].(core.DeleteActionImpl).DeleteOptions.PropagationPolicy; *p != metav1.DeletePropagationForeground {
		t.Fatalf("policy %s", *p)
	}
	// The dependent is gone: the finalizer comes off.
	if err := c.stores[podGVR].Delete(pod); err != nil {
		t.Fatal(err)
	}
	c.forget(podGVR, pod)
	meta.ClearActions()
	if err := c.sync(context.Background(), key(rsGVR, "rs")); err != nil {
		t.Fatal(err)
	}
	w = writes(meta)
	if len(w) != 1 || w[0].GetVerb() != "patch" || !strings.Contains(string(w[0].(core.PatchAction).GetPatch()), `"finalizers":null`) {
		t.Fatalf("actions %v", w)
	}
}

func TestKeyRoundTrip(t *testing.T) {
	n := node{gvr: rsGVR, namespace: "ns", name: "a.b"}
	got, ok := parseKey(n.key())
	if !ok || got != n {
		t.Fatalf("%v %v", got, ok)
	}
	if _, ok := parseKey("bad"); ok {
		t.Fatal("bad key parsed")
	}
}
