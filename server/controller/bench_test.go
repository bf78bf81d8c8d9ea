package controller_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/internal/apitest"
	"github.com/orch-dev/orch/internal/kube"
)

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkInformerMemory measures the heap an informer cache of 5,000
// deployment-style pods costs: typed (what the controllers share) and
// metadata-only (what the garbage collector uses for other kinds).
func BenchmarkInformerMemory(b *testing.B) {
	const n = 5000
	s := apitest.Start(b)
	ctx := context.Background()
	if _, err := s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "orchtest-mem"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				p := newDeployment("web", 1, "registry.local/web:1").Spec.Template
				pod := &corev1.Pod{ObjectMeta: p.ObjectMeta, Spec: p.Spec}
				pod.Name = fmt.Sprintf("web-5d98f9c4bd-%05d", i)
				pod.Labels = map[string]string{"app": "web", "pod-template-hash": "5d98f9c4bd"}
				pod.Spec.NodeName = "node-1"
				if _, err := s.Client.CoreV1().Pods("orchtest-mem").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	meta, err := metadata.NewForConfig(s.Config)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, kind := range []string{"typed", "metadata"} {
			before := heap()
			stop := make(chan struct{})
			var inf cache.SharedIndexInformer
			if kind == "typed" {
				f := kube.NewSharedInformerFactory(s.Kube, 0)
				inf = f.Core().V1().Pods().Informer()
				f.Start(stop)
			} else {
				f := metadatainformer.NewSharedInformerFactoryWithOptions(meta, 0, metadatainformer.WithTransform(func(o any) (any, error) {
					o.(*metav1.PartialObjectMetadata).ManagedFields = nil
					return o, nil
				}))
				inf = f.ForResource(corev1.SchemeGroupVersion.WithResource("pods")).Informer()
				f.Start(stop)
			}
			cache.WaitForCacheSync(stop, inf.HasSynced)
			if got := len(inf.GetStore().ListKeys()); got != n {
				b.Fatalf("%s cache holds %d pods", kind, got)
			}
			after := heap()
			b.ReportMetric(float64(after-before)/float64(n), kind+"-B/pod")
			runtime.KeepAlive(inf)
			close(stop)
		}
	}
}

// BenchmarkDeploymentRollout is the end-to-end time for a 3-replica
// Deployment to become available (API, controllers and a simulated kubelet).
func BenchmarkDeploymentRollout(b *testing.B) {
	c := startClusterB(b)
	ns := "orchtest-bench"
	if _, err := c.Client.CoreV1().Namespaces().Create(c.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	c.runKubeletB(b, ns)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("web-%d", i)
		if _, err := c.Client.AppsV1().Deployments(ns).Create(c.ctx, newDeployment(name, 3, "web:1"), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok, _ := c.rolledOut(ns, name)()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("rollout timed out")
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}
