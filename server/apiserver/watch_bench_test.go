package apiserver

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// BenchmarkWatchFanout100 is issue 3's watch fan-out: 100 client-go
// watchers (JSON, each on its own connection, as 100 processes would
// watch) of the pods of a namespace while 8 clients create b.N pods. It
// reports the delivery latency from a create's response to the event
// reaching a watcher's decoded result, over all watchers and events (p50,
// p99, max), and the events delivered per second.
func BenchmarkWatchFanout100(b *testing.B) {
	const watchers, writers = 100, 8
	ts := newTestServer(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pods := ts.client.CoreV1().Pods("default")
	l, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	created := make([]atomic.Int64, b.N+1) // ns since base, by pod index
	base := time.Now()
	recv := make([][]time.Duration, watchers) // by watcher, pod index
	for i := range recv {
		recv[i] = make([]time.Duration, b.N+1)
	}
	var got sync.WaitGroup
	for i := range watchers {
		w, err := pods.Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
		if err != nil {
			b.Fatal(err)
		}
		got.Add(1)
		go func() {
			defer got.Done()
			defer w.Stop()
			seen := 0
			for ev := range w.ResultChan() {
				if ev.Type != watch.Added {
					continue
				}
				now := time.Since(base)
				p := ev.Object.(*corev1.Pod)
				idx, err := strconv.Atoi(p.Name[len("bench-"):])
				if err != nil || idx > b.N {
					continue
				}
				recv[i][idx] = now
				if seen++; seen == b.N {
					return
				}
			}
			b.Errorf("watcher %d: watch ended after %d events", i, seen)
		}()
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	t0 := time.Now()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				if _, err := pods.Create(ctx, benchPod(n), metav1.CreateOptions{}); err != nil {
					b.Error(err)
					return
				}
				created[n].Store(int64(time.Since(base)))
			}
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { got.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatal("watchers did not get every event")
	}
	el := time.Since(t0)
	b.StopTimer()
	// An event can reach a watcher before the create's response reaches
	// its client: that latency counts as 0.
	var all []time.Duration
	for _, r := range recv {
		for idx := 1; idx <= b.N; idx++ {
			all = append(all, max(0, r[idx]-time.Duration(created[idx].Load())))
		}
	}
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))]) / 1e6 }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(all[len(all)-1])/1e6, "max-ms")
	b.ReportMetric(float64(len(all))/el.Seconds(), "events/s")
}
