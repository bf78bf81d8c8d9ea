package scheduler

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/orch-dev/orch/internal/kube"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testNode is a Ready node offering cpu (cores), memory (GiB) and pods.
func testNode(name string, cpu, memGi, pods int64, labels map[string]string) *corev1.Node {
	alloc := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(cpu, resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(memGi<<30, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(pods, resource.DecimalSI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(100<<30, resource.BinarySI),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{
			Capacity:    alloc.DeepCopy(),
			Allocatable: alloc,
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}},
		},
	}
}

// testPod is a pod requesting cpu (millicores) and memory (MiB).
func testPod(ns, name string, milliCPU, memMi int64) *corev1.Pod {
	c := corev1.Container{Name: "c", Image: "busybox:stable"}
	if milliCPU > 0 || memMi > 0 {
		c.Resources.Requests = corev1.ResourceList{}
		if milliCPU > 0 {
			c.Resources.Requests[corev1.ResourceCPU] = *resource.NewMilliQuantity(milliCPU, resource.DecimalSI)
		}
		if memMi > 0 {
			c.Resources.Requests[corev1.ResourceMemory] = *resource.NewQuantity(memMi<<20, resource.BinarySI)
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}},
	}
}

// createNodes creates nodes through the API, the status included.
func createNodes(tb testing.TB, cs kube.Interface, nodes ...*corev1.Node) {
	tb.Helper()
	ctx := context.Background()
	for _, n := range nodes {
		st := n.Status
		got, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			tb.Fatalf("create node %s: %v", n.Name, err)
		}
		if len(got.Status.Conditions) == 0 {
			got.Status = st
			if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
				tb.Fatalf("node %s status: %v", n.Name, err)
			}
		}
	}
}

// parallel runs fn(i) for i in [0,n) on workers goroutines.
func parallel(n, workers int, fn func(i int) error) error {
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// startScheduler runs a scheduler with its own informer factory until the
// test ends.
func startScheduler(tb testing.TB, cs kube.Interface, cfg Config) (*Scheduler, *kube.SharedInformerFactory) {
	tb.Helper()
	f := kube.NewSharedInformerFactory(cs, 0)
	s, err := New(cfg, cs, f, quietLog())
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	f.Start(ctx.Done())
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("scheduler: %v", err)
		}
		f.Shutdown()
	})
	return s, f
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			tb.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nodeName(i int) string { return fmt.Sprintf("orchtest-node-%05d", i) }
