package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func nextEvent(t *testing.T, w Watcher) Event {
	t.Helper()
	select {
	case e, ok := <-w.Events():
		if !ok {
			t.Fatalf("watch ended: %v", w.Err())
		}
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no event")
	}
	return Event{}
}

func TestWatchEvents(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	mustCreate(t, db, "/registry/pods/first", "x")
	w, err := db.Watch(ctx, "/registry/pods/", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	r1 := mustCreate(t, db, "/registry/pods/a", "v1")
	mustCreate(t, db, "/registry/services/x", "other") // filtered out
	r2, _ := db.Update(ctx, "/registry/pods/a", []byte("v2"), r1)
	del, _ := db.Delete(ctx, "/registry/pods/a", r2)

	e := nextEvent(t, w)
	if e.Type != EventCreate || e.Prev != nil || string(e.KV.Value) != "v1" || e.KV.CreateRevision != r1 || e.Revision() != r1 {
		t.Fatalf("create event: %+v", e)
	}
	e = nextEvent(t, w)
	if e.Type != EventUpdate || string(e.KV.Value) != "v2" || e.Prev == nil || string(e.Prev.Value) != "v1" ||
		e.Prev.ModRevision != r1 || e.KV.CreateRevision != r1 || e.Revision() != r2 {
		t.Fatalf("update event: %+v prev %+v", e, e.Prev)
	}
	e = nextEvent(t, w)
	if e.Type != EventDelete || string(e.KV.Value) != "v2" || e.Prev == nil || e.Prev.ModRevision != r2 ||
		e.Revision() != del.ModRevision || e.KV.CreateRevision != r1 {
		t.Fatalf("delete event: %+v prev %+v", e, e.Prev)
	}
	// The same history read from disk (after a restart) gives the same events.
	db.reopen()
	w2, err := db.Watch(ctx, "/registry/pods/", 0)
	if err != nil {
		t.Fatal(err)
	}
	w2.Stop()
	w3, err := db.Watch(ctx, "/registry/pods/", r1-1)
	if err != nil {
		t.Fatal(err)
	}
	defer w3.Stop()
	for _, want := range []EventType{EventCreate, EventUpdate, EventDelete} {
		if e := nextEvent(t, w3); e.Type != want {
			t.Fatalf("replayed %v, want %v", e.Type, want)
		}
	}
}

func TestWatchErrors(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	mustCreate(t, db, "/a", "x")
	if _, err := db.Watch(ctx, "/", 2); !errors.Is(err, ErrFutureRevision) {
		t.Fatalf("future watch: %v", err)
	}
	// Cancellation ends the watch without an error.
	cctx, cancel := context.WithCancel(ctx)
	w, err := db.Watch(cctx, "/", 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for range w.Events() {
		t.Fatal("event after cancel")
	}
	if w.Err() != nil {
		t.Fatalf("err after cancel: %v", w.Err())
	}
	w.Stop()
	// Stop with undelivered events, twice.
	w, _ = db.Watch(ctx, "/", 0)
	for i := range 300 {
		mustCreate(t, db, fmt.Sprintf("/s/%d", i), "x")
	}
	w.Stop()
	w.Stop()
	if w.Err() != nil {
		t.Fatalf("err after stop: %v", w.Err())
	}
}

// TestSlowWatcherEnds: a watcher that does not read while the history moves
// past it is ended with ErrCompacted, and writers are never blocked.
func TestSlowWatcherEnds(t *testing.T) {
	db := openTestDB(t, Config{HistorySize: 300, WatchCacheSize: 64})
	ctx := ctxT(t)
	w, err := db.Watch(ctx, "/", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for i := range 1000 {
		mustCreate(t, db, fmt.Sprintf("/k/%d", i), "x")
	}
	got := 0
	for e := range w.Events() {
		if e.Revision() != int64(got+1) {
			t.Fatalf("event %d has revision %d", got, e.Revision())
		}
		got++
	}
	if !errors.Is(w.Err(), ErrCompacted) {
		t.Fatalf("slow watcher ended with %v after %d events", w.Err(), got)
	}
	if got >= 1000 {
		t.Fatalf("slow watcher got all %d events", got)
	}
}

// TestWatchReplayFromDisk: a watcher far behind the memory ring catches up
// from the on-disk history without gaps.
func TestWatchReplayFromDisk(t *testing.T) {
	db := openTestDB(t, Config{WatchCacheSize: 16})
	ctx := ctxT(t)
	for i := range 500 {
		mustCreate(t, db, fmt.Sprintf("/k/%03d", i), "x")
	}
	for _, from := range []int64{0, 1, 17, 250, 480, 499} {
		w, err := db.Watch(ctx, "/k/", from)
		if err != nil {
			t.Fatal(err)
		}
		if from > 0 {
			for want := from + 1; want <= 500; want++ {
				if e := nextEvent(t, w); e.Revision() != want {
					t.Fatalf("from %d: revision %d, want %d", from, e.Revision(), want)
				}
			}
		}
		mustCreate(t, db, fmt.Sprintf("/k/live%d", from), "x")
		if e := nextEvent(t, w); !strings.HasPrefix(e.KV.Key, "/k/live") {
			t.Fatalf("from %d: live event %+v", from, e)
		}
		w.Stop()
	}
}

// TestConcurrentWritersAndWatchers: many writers and watchers (live, resumed
// from the past, on sub-prefixes); every watcher sees every change under its
// prefix exactly once, in revision order, with no gaps.
func TestConcurrentWritersAndWatchers(t *testing.T) {
	db := openTestDB(t, Config{WatchCacheSize: 128})
	ctx := ctxT(t)
	const writers, perWriter = 16, 150
	for i := range 100 {
		mustCreate(t, db, fmt.Sprintf("/c/pre/%d", i), "x")
	}
	type spec struct {
		prefix string
		from   int64
	}
	specs := []spec{{"/c/", 0}, {"/c/", 1}, {"/c/", 50}, {"/c/w3/", 0}, {"/c/w7/", 10}, {"/c/pre/", 0}}
	for i := range 20 {
		specs = append(specs, spec{"/c/", int64(i * 5)})
	}
	type result struct {
		spec spec
		evs  []Event
		err  error
	}
	start := db.Revision()
	results := make([]result, len(specs))
	var wwg sync.WaitGroup
	total := start + writers*perWriter*2 // each writer: create then update
	for i, s := range specs {
		w, err := db.Watch(ctx, s.prefix, s.from)
		if err != nil {
			t.Fatal(err)
		}
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			defer w.Stop()
			results[i].spec = s
			for e := range w.Events() {
				results[i].evs = append(results[i].evs, e)
				// Whole-prefix watchers stop at the writers' last revision;
				// sub-prefix watchers at their poke (their writer may also
				// have written that last revision).
				if (s.prefix == "/c/" && e.Revision() == total) || strings.HasSuffix(e.KV.Key, "end") {
					return
				}
			}
			results[i].err = w.Err()
		}()
	}
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perWriter {
				key := fmt.Sprintf("/c/w%d/%d", g, n)
				rev, err := db.Create(ctx, key, []byte("1"))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := db.Update(ctx, key, []byte("2"), rev); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if db.Revision() != total {
		t.Fatalf("revision %d, want %d", db.Revision(), total)
	}
	// Watchers on a sub-prefix do not see the last revision: poke them.
	for _, p := range []string{"/c/w3/", "/c/w7/", "/c/pre/"} {
		mustCreate(t, db, p+"end", "x")
	}
	done := make(chan struct{})
	go func() { wwg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("watchers did not finish")
	}
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("watch %+v: %v", r.spec, r.err)
		}
		from := r.spec.from
		if from == 0 {
			from = start
		}
		want := from + 1
		for _, e := range r.evs {
			if !strings.HasPrefix(e.KV.Key, r.spec.prefix) {
				t.Fatalf("watch %+v got key %s", r.spec, e.KV.Key)
			}
			if r.spec.prefix == "/c/" {
				if e.Revision() != want {
					t.Fatalf("watch %+v: revision %d, want %d", r.spec, e.Revision(), want)
				}
				want++
			} else {
				if e.Revision() < want {
					t.Fatalf("watch %+v: revision %d out of order", r.spec, e.Revision())
				}
				want = e.Revision() + 1
			}
		}
		if r.spec.prefix == "/c/" && want != total+1 {
			t.Fatalf("watch %+v ended at %d", r.spec, want-1)
		}
	}
	// Sub-prefix watchers saw exactly their writer's events.
	for _, r := range results {
		if r.spec.prefix == "/c/w3/" && (len(r.evs) != 2*perWriter+1 || r.evs[len(r.evs)-1].KV.Key != "/c/w3/end") {
			t.Fatalf("watch /c/w3/ got %d events", len(r.evs))
		}
	}
}

// TestConsistentPagingUnderWrites: pages at a fixed revision stay consistent
// while writers change, add and delete keys.
func TestConsistentPagingUnderWrites(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	for i := range 200 {
		mustCreate(t, db, fmt.Sprintf("/p/%03d", i), "v0")
	}
	snap, err := db.List(ctx, "/p/", ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("/p/%03d", (n*7+g*50)%200)
				switch n % 3 {
				case 0:
					_, _ = db.Update(ctx, k, []byte(fmt.Sprint(n)), 0)
				case 1:
					_, _ = db.Delete(ctx, k, 0)
				case 2:
					_, _ = db.Create(ctx, k, []byte("re"))
					_, _ = db.Create(ctx, fmt.Sprintf("/p/%03d-new-%d-%d", n%200, g, n), []byte("n"))
				}
			}
		}()
	}
	for round := range 5 {
		var paged []KeyValue
		opts := ListOptions{Revision: snap.Revision, Limit: 17}
		for {
			res, err := db.List(ctx, "/p/", opts)
			if err != nil {
				close(stop)
				wg.Wait()
				t.Fatal(err)
			}
			if res.Revision != snap.Revision {
				t.Errorf("page at revision %d", res.Revision)
			}
			paged = append(paged, res.KVs...)
			if res.Continue == "" {
				break
			}
			opts.Continue = res.Continue
			time.Sleep(time.Millisecond)
		}
		if !sameKVs(paged, snap.KVs) {
			close(stop)
			wg.Wait()
			t.Fatalf("round %d: paged list differs from the snapshot (%d vs %d keys)", round, len(paged), len(snap.KVs))
		}
	}
	close(stop)
	wg.Wait()
	if db.Revision() == snap.Revision {
		t.Fatal("writers made no changes")
	}
}
