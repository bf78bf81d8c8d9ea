package scheduler

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/orch-dev/orch/internal/apitest"
	"github.com/orch-dev/orch/internal/kube"
)

// BenchmarkSchedule10kPods5kNodes is kube-scheduler_perf's
// SchedulingBasic 5000Nodes_10000Pods against a real orch API server: the
// nodes and pods are created first, then the scheduler starts and the
// clock runs until every pod is bound (pods/s is the figure).

// benchConfig is the configuration measured (the defaults).
var benchConfig = Config{}

func BenchmarkSchedule10kPods5kNodes(b *testing.B) {
	const nodes, pods = 5000, 10000
	for it := 0; it < b.N; it++ {
		b.StopTimer()
		srv := apitest.Start(b)
		cs := srv.Kube
		ctx := context.Background()
		if err := parallel(nodes, 32, func(i int) error {
			_, err := cs.CoreV1().Nodes().Create(ctx, testNode(nodeName(i), 4, 32, 110, nil), metav1.CreateOptions{})
			return err
		}); err != nil {
			b.Fatal(err)
		}
		if err := parallel(pods, 32, func(i int) error {
			p := testPod("default", fmt.Sprintf("p-%05d", i), 100, 64)
			p.UID = ""
			_, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
			return err
		}); err != nil {
			b.Fatal(err)
		}
		// The scheduler's own informers list the cluster before the clock
		// starts; bound pods are counted from the same (shared) pod
		// informer, so measuring adds no watch of its own.
		var bound atomic.Int64
		all := make(chan struct{})
		f := kube.NewSharedInformerFactory(cs, 0)
		if _, err := f.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			UpdateFunc: func(o, n any) {
				if o.(*corev1.Pod).Spec.NodeName == "" && n.(*corev1.Pod).Spec.NodeName != "" {
					if bound.Add(1) == pods {
						close(all)
					}
				}
			},
		}); err != nil {
			b.Fatal(err)
		}
		s, err := New(benchConfig, cs, f, quietLog())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(ctx)
		f.Start(ctx.Done())
		f.WaitForCacheSync(ctx.Done())
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- s.Run(ctx) }()
		select {
		case <-all:
		case <-time.After(5 * time.Minute):
			b.Fatalf("only %d of %d pods bound", bound.Load(), pods)
		}
		el := time.Since(start)
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		f.Shutdown()
		b.ReportMetric(float64(pods)/el.Seconds(), "pods/s")
	}
}

// BenchmarkCycle5kNodes is one scheduling cycle (filter, score, assume) of
// a pod among 5,000 nodes, without the API: the scheduler's own cost.
func BenchmarkCycle5kNodes(b *testing.B) {
	c := newCache()
	for i := 0; i < 5000; i++ {
		c.setNode(testNode(nodeName(i), 64, 256, 1<<20, map[string]string{"zone": fmt.Sprint(i % 3)}))
	}
	a := newAlgorithm(0, logr.Discard())
	yes := true
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := testPod("default", fmt.Sprintf("p-%d", i), 100, 64)
		p.UID = types.UID(fmt.Sprint(i))
		p.OwnerReferences = []metav1.OwnerReference{{UID: types.UID(fmt.Sprint(i % 50)), Controller: &yes}}
		pi, err := newPodInfo(p, "default/"+p.Name, c.nz)
		if err != nil {
			b.Fatal(err)
		}
		c.mu.Lock()
		n, _ := a.schedule(c, pi)
		if n == nil {
			b.Fatal("no node")
		}
		c.assumeLocked(pi, n)
		c.mu.Unlock()
	}
}
