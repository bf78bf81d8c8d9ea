package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/orch-dev/orch/store"
)

// heapIdle is the heap memory the runtime holds beyond its objects (free
// and unused spans not returned to the OS). Live objects of other tests in
// the same process do not count.
func heapIdle() uint64 {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	metrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64()
}

var sink [][]byte

// TestTrimMemoryAfterBurst writes a burst to the store with a large heap
// left behind, and expects trimMemory to hand it back once writes stop.
func TestTrimMemoryAfterBurst(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "state.db")}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := &Server{store: st, log: log}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.trimMemory(ctx, 100*time.Millisecond, 8<<20) }()

	// A burst: 1,000 writes, done concurrently so they commit quickly.
	errs := make(chan error, 1000)
	for i := 0; i < 1000; i++ {
		go func() {
			_, err := st.Create(ctx, fmt.Sprintf("/registry/core/configmaps/default/c%d", i), []byte("v"))
			errs <- err
		}()
	}
	for i := 0; i < 1000; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The heap of the burst: 64 MB, garbage once sink is dropped.
	for i := 0; i < 64; i++ {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	runtime.GC()
	if h := heapIdle(); h < 48<<20 {
		t.Fatalf("idle heap %d MB before the trim", h>>20)
	}
	deadline := time.Now().Add(5 * time.Second)
	for heapIdle() > 16<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("idle heap %d MB 5 s after the burst", heapIdle()>>20)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
