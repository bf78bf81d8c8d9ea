package apiserver

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func benchPod(i int64) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", i)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:stable"}}},
	}
}

// BenchmarkCreatePods32 creates pods from 32 concurrent client-go clients
// over loopback HTTP (apibench's create phase without TLS).
func BenchmarkCreatePods32(b *testing.B) {
	ts := newTestServer(b)
	ctx := context.Background()
	var n atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/32 + 1
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := ts.client.CoreV1().Pods("default").Create(ctx, benchPod(n.Add(1)), metav1.CreateOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkList5000 lists 5,000 pods as JSON.
func BenchmarkList5000(b *testing.B) {
	ts := newTestServer(b)
	ctx := context.Background()
	var wg sync.WaitGroup
	var n atomic.Int64
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n.Load() < 5000 {
				i := n.Add(1)
				if i > 5000 {
					return
				}
				if _, err := ts.client.CoreV1().Pods("default").Create(ctx, benchPod(i), metav1.CreateOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, err := ts.client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) != 5000 {
			b.Fatalf("%v %d", err, len(l.Items))
		}
	}
}
