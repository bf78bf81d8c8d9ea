package apiserver

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

func TestInformerListWatch(t *testing.T) {
	ts := newTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		if _, err := ts.client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pre-%d", i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f := informers.NewSharedInformerFactory(ts.client, 0)
	inf := f.Core().V1().ConfigMaps().Informer()
	added := make(chan string, 100)
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj interface{}) {
		added <- obj.(*corev1.ConfigMap).Name
	}})
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer never synced")
	}
	if n := len(inf.GetStore().List()); n != 20 {
		t.Fatalf("informer has %d objects, want 20", n)
	}
	if _, err := ts.client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "late"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case name := <-added:
			if name == "late" {
				return
			}
		case <-ctx.Done():
			t.Fatal("informer missed a new object")
		}
	}
}

func TestWatchCompactedIsGone(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := ts.client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c%d", i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rev := ts.st.Revision()
	if err := ts.st.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	_, err := ts.client.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: "2"})
	if err == nil || !(apierrors.IsGone(err) || apierrors.IsResourceExpired(err)) {
		t.Fatalf("watch from a compacted revision: %v", err)
	}
	// Relisting works and a watch from the list's revision goes on.
	l, err := ts.client.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := strconv.ParseInt(l.ResourceVersion, 10, 64); v < rev {
		t.Fatalf("list revision %d < %d", v, rev)
	}
	w, err := ts.client.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	w.Stop()
}

func TestDynamicClient(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	dc, err := dynamic.NewForConfig(ts.cfg)
	if err != nil {
		t.Fatal(err)
	}
	gvr := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	u := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]interface{}{"name": "dyn"},
		"spec": map[string]interface{}{
			"selector": map[string]interface{}{"matchLabels": map[string]interface{}{"app": "dyn"}},
			"template": map[string]interface{}{
				"metadata": map[string]interface{}{"labels": map[string]interface{}{"app": "dyn"}},
				"spec":     map[string]interface{}{"containers": []interface{}{map[string]interface{}{"name": "c", "image": "busybox:stable"}}},
			},
		},
	}}
	out, err := dc.Resource(gvr).Namespace("default").Create(ctx, u, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r, _, _ := unstructured.NestedInt64(out.Object, "spec", "replicas"); r != 1 {
		t.Fatalf("defaulted replicas = %d", r)
	}
	l, err := dc.Resource(gvr).Namespace("default").List(ctx, metav1.ListOptions{})
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("dynamic list: %v", err)
	}
}
