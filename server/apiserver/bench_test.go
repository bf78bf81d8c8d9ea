package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
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
	defer reportCPU(b)()
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

// BenchmarkList5000 lists 5,000 pods with client-go's default content type
// (protobuf for built-in types).
func BenchmarkList5000(b *testing.B) {
	ts := serverWith5000Pods(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, err := ts.client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) != 5000 {
			b.Fatalf("%v %d", err, len(l.Items))
		}
	}
}

// BenchmarkListJSON5000 lists 5,000 pods as apibench does: client-go asking
// for JSON (the client's decoding dominates).
func BenchmarkListJSON5000(b *testing.B) {
	ts := serverWith5000Pods(b)
	cfg := rest.CopyConfig(ts.cfg)
	cfg.ContentType = "application/json"
	cfg.AcceptContentTypes = "application/json"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) != 5000 {
			b.Fatalf("%v %d", err, len(l.Items))
		}
	}
}

// BenchmarkListHandler5000 is the server side of a LIST of 5,000 pods as
// JSON, without the client's decoding.
func BenchmarkListHandler5000(b *testing.B) {
	ts := serverWith5000Pods(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		listPodsJSON(b, ts.srv)
	}
}

// listPodsJSON serves a JSON LIST of the default namespace's pods in
// process and returns the body.
func listPodsJSON(b *testing.B, s *Server) []byte {
	req := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces/default/pods", nil)
	req.Header.Set("Accept", "application/json")
	req = req.WithContext(WithUser(req.Context(), &User{Name: "b", Groups: []string{GroupMasters}}))
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != 200 {
		b.Fatal(w.Code)
	}
	return w.Body.Bytes()
}

// BenchmarkClientDecodeList5000 is the client side alone of apibench's LIST:
// client-go's JSON decoding (the serializer its REST client picks for
// application/json) of the body the server sends for 5,000 pods. Issue 3's
// "LIST of 5,000 pods <= 100 ms" is measured with apibench, whose figure
// holds this decoding plus the server's part (BenchmarkListHandler5000).
func BenchmarkClientDecodeList5000(b *testing.B) {
	body := listPodsJSON(b, serverWith5000Pods(b).srv)
	dec, err := runtime.NewClientNegotiator(scheme.Codecs.WithoutConversion(), corev1.SchemeGroupVersion).Decoder(runtime.ContentTypeJSON, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var l corev1.PodList
		if _, _, err := dec.Decode(body, nil, &l); err != nil || len(l.Items) != 5000 {
			b.Fatalf("%v %d", err, len(l.Items))
		}
	}
}

// BenchmarkCreateHandler is the server side of a pod create from JSON.
func BenchmarkCreateHandler(b *testing.B) {
	ts := newTestServer(b)
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bench-%d","namespace":"default"},"spec":{"containers":[{"name":"c","image":"busybox:stable"}]}}`, n.Add(1))
			req := httptest.NewRequest(http.MethodPost, "/api/v1/namespaces/default/pods", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json")
			req = req.WithContext(WithUser(req.Context(), &User{Name: "b", Groups: []string{GroupMasters}}))
			w := httptest.NewRecorder()
			ts.srv.ServeHTTP(w, req)
			if w.Code != 201 {
				b.Fatal(w.Code, w.Body.String())
			}
		}
	})
}

// serverWith5000Pods starts a test server holding 5,000 pods, created by 32
// concurrent clients.
func serverWith5000Pods(b *testing.B) *testServer {
	ts := newTestServer(b)
	ctx := context.Background()
	var wg sync.WaitGroup
	var n atomic.Int64
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
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
	return ts
}

// BenchmarkStatusPatch is the server side of the scheduler's status patch
// of an unschedulable pod (a strategic merge patch of pods/status that
// changes the PodScheduled condition each time).
func BenchmarkStatusPatch(b *testing.B) {
	ts := newTestServer(b)
	ctx := context.Background()
	p, err := ts.client.CoreV1().Pods("default").Create(ctx, benchPod(1), metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	for i := 0; i < b.N; i++ {
		body := fmt.Sprintf(`{"metadata":{"uid":%q},"status":{"conditions":[{"type":"PodScheduled","status":"False","lastProbeTime":null,"lastTransitionTime":"2026-01-01T00:00:00Z","reason":"Unschedulable","message":"no nodes %d"}]}}`, p.UID, i)
		req := httptest.NewRequest(http.MethodPatch, "/api/v1/namespaces/default/pods/bench-1/status", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/strategic-merge-patch+json")
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "orch-scheduler/v0")
		req = req.WithContext(WithUser(req.Context(), &User{Name: "b", Groups: []string{GroupMasters}}))
		w := httptest.NewRecorder()
		ts.srv.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}

// reportCPU reports the process CPU time (user and system) per operation
// from now until the returned function runs: what a benchmark costs the
// machine, rather than how long it waits (for fsync, say).
func reportCPU(b *testing.B) func() {
	var r0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	return func() {
		var r1 syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		ns := (r1.Utime.Nano() + r1.Stime.Nano()) - (r0.Utime.Nano() + r0.Stime.Nano())
		b.ReportMetric(float64(ns)/float64(b.N), "cpu-ns/op")
	}
}
