package kube_test

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/orch-dev/orch/internal/apitest"
	"github.com/orch-dev/orch/internal/kube"
	"github.com/orch-dev/orch/internal/kube/clientgo"
)

func pod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": "x"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
}

// TestTypedClients drives every verb of the typed clients, and the pods'
// binding and namespaces' finalize subresources, against a real API server.
func TestTypedClients(t *testing.T) {
	s := apitest.Start(t)
	ctx := context.Background()
	var c kube.Interface = s.Kube
	pods := c.CoreV1().Pods("default")

	p, err := pods.Create(ctx, pod("a"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.UID == "" || p.ResourceVersion == "" {
		t.Fatalf("created pod lacks uid/resourceVersion: %+v", p.ObjectMeta)
	}
	w, err := pods.Watch(ctx, metav1.ListOptions{ResourceVersion: p.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	p.Labels["b"] = "c"
	if p, err = pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	p.Status.Message = "hello"
	if p, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil || p.Status.Message != "hello" {
		t.Fatalf("update status: %v %q", err, p.Status.Message)
	}
	if p, err = pods.Patch(ctx, "a", types.MergePatchType, []byte(`{"metadata":{"annotations":{"k":"v"}}}`), metav1.PatchOptions{}); err != nil || p.Annotations["k"] != "v" {
		t.Fatalf("patch: %v %v", err, p.Annotations)
	}
	select {
	case ev := <-w.ResultChan():
		if got := ev.Object.(*corev1.Pod); ev.Type != "MODIFIED" || got.Labels["b"] != "c" {
			t.Fatalf("watch: %s %v", ev.Type, got.Labels)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event")
	}
	if _, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if p, err = pods.Get(ctx, "a", metav1.GetOptions{}); err != nil || p.Spec.NodeName != "n1" {
		t.Fatalf("after bind: %v node %q", err, p.Spec.NodeName)
	}
	l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=x"})
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("list: %v %d items", err, len(l.Items))
	}
	if err := pods.Delete(ctx, "a", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Get(ctx, "a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}

	// A terminating namespace's finalizers go with namespaces/finalize.
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fin"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.CoreV1().Namespaces().Delete(ctx, "fin", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ns, err := c.CoreV1().Namespaces().Get(ctx, "fin", metav1.GetOptions{})
	if err != nil || len(ns.Spec.Finalizers) == 0 {
		t.Fatalf("terminating namespace: %v %v", err, ns.Spec.Finalizers)
	}
	ns.Spec.Finalizers = nil
	if _, err = c.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("finalize: %v", err)
	}
	if ns, err := c.CoreV1().Namespaces().Get(ctx, "fin", metav1.GetOptions{}); !apierrors.IsNotFound(err) && (err != nil || len(ns.Spec.Finalizers) != 0) {
		t.Fatalf("after finalize: %v %v", err, ns.Spec.Finalizers)
	}

	// One create in each other group.
	if _, err := c.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "d"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}}, Spec: pod("t").Spec},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoordinationV1().Leases("default").Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "s"}, AddressType: discoveryv1.AddressTypeIPv4}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AppsV1().Deployments("default").Get(ctx, "missing", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get of a missing deployment: %v", err)
	}
}

// TestInformerFactory: informers list what exists, follow changes, honour
// the factory's list options and share one informer per type.
func TestInformerFactory(t *testing.T) {
	s := apitest.Start(t)
	ctx := context.Background()
	pods := s.Kube.CoreV1().Pods("default")
	for _, n := range []string{"a", "b"} {
		p := pod(n)
		if n == "b" {
			p.Labels["app"] = "other"
		}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f := kube.NewSharedInformerFactory(s.Kube, 0, kube.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "app=x" }))
	inf := f.Core().V1().Pods()
	if f.Core().V1().Pods().Informer() != inf.Informer() {
		t.Fatal("two informers for one type")
	}
	leases := f.Coordination().V1().Leases()
	stop := make(chan struct{})
	defer func() { close(stop); f.Shutdown() }()
	f.Start(stop)
	for typ, ok := range f.WaitForCacheSync(stop) {
		if !ok {
			t.Fatalf("%v did not sync", typ)
		}
	}
	got, err := inf.Lister().Pods("default").List(labels.Everything())
	if err != nil || len(got) != 1 || got[0].Name != "a" {
		t.Fatalf("lister: %v %d", err, len(got))
	}
	if l, err := leases.Lister().List(labels.Everything()); err != nil || len(l) != 0 {
		t.Fatalf("leases lister: %v %d", err, len(l))
	}
	if _, err := pods.Create(ctx, pod("c"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := inf.Lister().Pods("default").Get("c"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the informer never saw pod c")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestForResource: the generic lookup hands out the factory's shared
// informers and refuses resources it has none for.
func TestForResource(t *testing.T) {
	f := kube.NewSharedInformerFactory(clientgo.Wrap(fake.NewClientset()), 0)
	inf, err := f.ForResource(appsv1.SchemeGroupVersion.WithResource("replicasets"))
	if err != nil {
		t.Fatal(err)
	}
	if inf != f.Apps().V1().ReplicaSets().Informer() {
		t.Fatal("ForResource made a second replicaset informer")
	}
	if inf, err := f.ForResource(discoveryv1.SchemeGroupVersion.WithResource("endpointslices")); err != nil || inf != f.Discovery().V1().EndpointSlices().Informer() {
		t.Fatalf("endpointslices: %v", err)
	}
	if _, err := f.ForResource(schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}); err == nil {
		t.Fatal("an informer for jobs, which the factory does not serve")
	}
}

// TestEventSink records through a client-go broadcaster into the server.
func TestEventSink(t *testing.T) {
	s := apitest.Start(t)
	ctx := context.Background()
	p, err := s.Kube.CoreV1().Pods("default").Create(ctx, pod("e"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := record.NewBroadcaster()
	defer b.Shutdown()
	b.StartRecordingToSink(kube.EventSink{Client: s.Kube.CoreV1()})
	rec := b.NewRecorder(kube.Scheme(), corev1.EventSource{Component: "test"})
	rec.Event(p, corev1.EventTypeNormal, "Tested", "once")
	rec.Event(p, corev1.EventTypeNormal, "Tested", "once") // a repeat: patched, count 2
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := s.Kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Items) == 1 && l.Items[0].Count == 2 && l.Items[0].InvolvedObject.UID == p.UID {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events: %+v", l.Items)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClientGoAdapter: client-go's fake serves as a kube.Interface.
func TestClientGoAdapter(t *testing.T) {
	fc := fake.NewClientset()
	c := clientgo.Wrap(fc)
	ctx := context.Background()
	if _, err := c.CoreV1().Pods("default").Create(ctx, pod("f"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := fc.CoreV1().Pods("default").Get(ctx, "f", metav1.GetOptions{}); err != nil || got.Name != "f" {
		t.Fatalf("fake did not see the create: %v", err)
	}
	f := kube.NewSharedInformerFactory(c, 0)
	inf := f.Core().V1().Pods()
	stop := make(chan struct{})
	defer func() { close(stop); f.Shutdown() }()
	f.Start(stop)
	f.WaitForCacheSync(stop)
	if _, err := inf.Lister().Pods("default").Get("f"); err != nil {
		t.Fatalf("informer over the fake: %v", err)
	}
}
