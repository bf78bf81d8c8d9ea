package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func mustCreate(t *testing.T, db Store, key, value string) int64 {
	t.Helper()
	rev, err := db.Create(ctxT(t), key, []byte(value))
	if err != nil {
		t.Fatalf("create %s: %v", key, err)
	}
	return rev
}

func TestCreateGet(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	if got := db.Revision(); got != 0 {
		t.Fatalf("initial revision %d", got)
	}
	r1 := mustCreate(t, db, "/registry/core/pods/default/a", "A")
	r2 := mustCreate(t, db, "/registry/core/pods/default/b", "B")
	if r1 != 1 || r2 != 2 || db.Revision() != 2 {
		t.Fatalf("revisions %d %d, current %d", r1, r2, db.Revision())
	}
	kv, err := db.Get(ctx, "/registry/core/pods/default/a")
	if err != nil {
		t.Fatal(err)
	}
	if string(kv.Value) != "A" || kv.CreateRevision != 1 || kv.ModRevision != 1 || kv.Key != "/registry/core/pods/default/a" {
		t.Fatalf("get: %+v", kv)
	}
	if _, err := db.Create(ctx, "/registry/core/pods/default/a", []byte("again")); !errors.Is(err, ErrExists) {
		t.Fatalf("create existing: %v", err)
	}
	kv, _ = db.Get(ctx, "/registry/core/pods/default/a")
	if string(kv.Value) != "A" {
		t.Fatalf("failed create changed the value: %q", kv.Value)
	}
	if db.Revision() != 2 {
		t.Fatalf("failed create took a revision: %d", db.Revision())
	}
	if _, err := db.Get(ctx, "/registry/core/pods/default/zz"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	// Empty and nil values are values.
	mustCreate(t, db, "/e", "")
	if kv, err := db.Get(ctx, "/e"); err != nil || len(kv.Value) != 0 || kv.Value == nil {
		t.Fatalf("empty value: %+v %v", kv, err)
	}
}

func TestCreateCopiesValue(t *testing.T) {
	db := openTestDB(t, Config{})
	buf := []byte("original")
	if _, err := db.Create(ctxT(t), "/k", buf); err != nil {
		t.Fatal(err)
	}
	copy(buf, "CHANGED!")
	kv, _ := db.Get(ctxT(t), "/k")
	if string(kv.Value) != "original" {
		t.Fatalf("store kept the caller's buffer: %q", kv.Value)
	}
}

func TestUpdate(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	r1 := mustCreate(t, db, "/k", "v1")
	r2, err := db.Update(ctx, "/k", []byte("v2"), r1)
	if err != nil || r2 != r1+1 {
		t.Fatalf("update: %d %v", r2, err)
	}
	if _, err := db.Update(ctx, "/k", []byte("stale"), r1); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	r3, err := db.Update(ctx, "/k", []byte("v3"), 0)
	if err != nil || r3 != r2+1 {
		t.Fatalf("unconditional update: %d %v", r3, err)
	}
	kv, _ := db.Get(ctx, "/k")
	if string(kv.Value) != "v3" || kv.CreateRevision != r1 || kv.ModRevision != r3 {
		t.Fatalf("after updates: %+v", kv)
	}
	if _, err := db.Update(ctx, "/missing", []byte("x"), 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
	if _, err := db.Update(ctx, "/k", []byte("x"), -1); err == nil {
		t.Fatal("negative expected revision accepted")
	}
	if db.Revision() != r3 {
		t.Fatalf("failed writes moved the revision to %d", db.Revision())
	}
}

func TestDelete(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	r1 := mustCreate(t, db, "/k", "v1")
	if _, err := db.Delete(ctx, "/k", r1+5); !errors.Is(err, ErrConflict) {
		t.Fatalf("conflicting delete: %v", err)
	}
	kv, err := db.Delete(ctx, "/k", r1)
	if err != nil {
		t.Fatal(err)
	}
	if string(kv.Value) != "v1" || kv.CreateRevision != r1 || kv.ModRevision != r1+1 {
		t.Fatalf("deleted: %+v", kv)
	}
	if _, err := db.Get(ctx, "/k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if _, err := db.Delete(ctx, "/k", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	// Re-create: new create revision.
	r3 := mustCreate(t, db, "/k", "again")
	if kv, _ := db.Get(ctx, "/k"); kv.CreateRevision != r3 {
		t.Fatalf("recreated: %+v", kv)
	}
	if _, err := db.Delete(ctx, "/k", 0); err != nil {
		t.Fatalf("unconditional delete: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	mustCreate(t, db, "/a/1", "x")
	rev := db.Revision()
	if _, err := db.Create(ctx, "", []byte("x")); err == nil {
		t.Error("empty key accepted")
	}
	if _, err := db.Create(ctx, strings.Repeat("k", 40000), []byte("x")); err == nil {
		t.Error("oversized key accepted")
	}
	if _, err := db.Get(ctx, ""); err == nil {
		t.Error("get of empty key accepted")
	}
	if _, err := db.List(ctx, "/a/", ListOptions{Limit: -1}); err == nil {
		t.Error("negative limit accepted")
	}
	if _, err := db.List(ctx, "/a/", ListOptions{Revision: -1}); err == nil {
		t.Error("negative revision accepted")
	}
	if _, err := db.List(ctx, "/a/", ListOptions{Continue: "/b/1"}); err == nil {
		t.Error("continue key outside the prefix accepted")
	}
	if _, err := db.Watch(ctx, "/a/", -1); err == nil {
		t.Error("negative watch revision accepted")
	}
	if err := db.Compact(ctx, -1); err == nil {
		t.Error("negative compact revision accepted")
	}
	if _, err := Open(Config{}, testLogger(t)); err == nil {
		t.Error("open without a path accepted")
	}
	if _, err := Open(Config{Path: db.Path(), HistorySize: -1}, testLogger(t)); err == nil {
		t.Error("negative history size accepted")
	}
	// Nothing was lost or changed.
	if db.Revision() != rev {
		t.Fatalf("revision moved to %d", db.Revision())
	}
	if kv, err := db.Get(ctx, "/a/1"); err != nil || string(kv.Value) != "x" {
		t.Fatalf("value lost: %+v %v", kv, err)
	}
}

func TestBatchIsolatesFailures(t *testing.T) {
	// Many concurrent writers on one key: exactly one CAS from each round
	// wins, the others conflict, and the winners all land.
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	rev := mustCreate(t, db, "/cas", "0")
	const n = 32
	errs := make(chan error, n)
	revs := make(chan int64, n)
	for i := range n {
		go func() {
			r, err := db.Update(ctx, "/cas", []byte(fmt.Sprint(i)), rev)
			if err == nil {
				revs <- r
			}
			errs <- err
		}()
		go func() {
			_, err := db.Create(ctx, fmt.Sprintf("/other/%d", i), []byte("x"))
			errs <- err
		}()
	}
	var ok, conflicts int
	for range 2 * n {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrConflict):
			conflicts++
		default:
			t.Fatal(err)
		}
	}
	if ok != n+1 || conflicts != n-1 {
		t.Fatalf("%d ok, %d conflicts", ok, conflicts)
	}
	if got := <-revs; got != db.Revision() && got < rev {
		t.Fatalf("winner revision %d", got)
	}
	res, err := db.List(ctx, "/other/", ListOptions{})
	if err != nil || len(res.KVs) != n {
		t.Fatalf("list: %d %v", len(res.KVs), err)
	}
}

func TestClosed(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	mustCreate(t, db, "/k", "v")
	w, err := db.Watch(ctx, "/", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.DB.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.DB.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	for range w.Events() {
		t.Fatal("event after close")
	}
	if !errors.Is(w.Err(), ErrClosed) {
		t.Fatalf("watcher err after close: %v", w.Err())
	}
	w.Stop()
	checks := map[string]error{}
	_, checks["create"] = db.Create(ctx, "/x", nil)
	_, checks["update"] = db.Update(ctx, "/k", nil, 0)
	_, checks["delete"] = db.Delete(ctx, "/k", 0)
	_, checks["get"] = db.Get(ctx, "/k")
	_, checks["list"] = db.List(ctx, "/", ListOptions{})
	_, checks["watch"] = db.Watch(ctx, "/", 0)
	checks["compact"] = db.Compact(ctx, 1)
	for op, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after close: %v", op, err)
		}
	}
}

func TestListPaging(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	for i := range 25 {
		mustCreate(t, db, fmt.Sprintf("/registry/core/pods/ns/p%02d", i), fmt.Sprint(i))
	}
	mustCreate(t, db, "/registry/core/pods/ns0/other", "x")
	mustCreate(t, db, "/registry/core/pods/n", "x")
	res, err := db.List(ctx, "/registry/core/pods/ns/", ListOptions{})
	if err != nil || len(res.KVs) != 25 || res.Continue != "" || res.Remaining != 0 || res.Revision != db.Revision() {
		t.Fatalf("full list: %d %q %d %d %v", len(res.KVs), res.Continue, res.Remaining, res.Revision, err)
	}
	for i, kv := range res.KVs {
		if kv.Key != fmt.Sprintf("/registry/core/pods/ns/p%02d", i) {
			t.Fatalf("order: %d %s", i, kv.Key)
		}
	}
	var got []string
	opts := ListOptions{Limit: 10}
	for page := 0; ; page++ {
		res, err := db.List(ctx, "/registry/core/pods/ns/", opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range res.KVs {
			got = append(got, kv.Key)
		}
		wantRemaining := int64(25 - len(got))
		if res.Remaining != wantRemaining {
			t.Fatalf("page %d: remaining %d, want %d", page, res.Remaining, wantRemaining)
		}
		if res.Continue == "" {
			break
		}
		opts.Continue, opts.Revision = res.Continue, res.Revision
	}
	if len(got) != 25 {
		t.Fatalf("paged %d keys", len(got))
	}
	if res, _ := db.List(ctx, "/nothing/", ListOptions{}); len(res.KVs) != 0 || res.Remaining != 0 {
		t.Fatalf("empty prefix list: %+v", res)
	}
}

func TestListAtRevision(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	mustCreate(t, db, "/p/a", "a1")
	mustCreate(t, db, "/p/b", "b1")
	mustCreate(t, db, "/p/c", "c1")
	at := db.Revision()
	before, _ := db.List(ctx, "/p/", ListOptions{})
	// Change everything after `at`: update, delete, create, delete+recreate.
	if _, err := db.Update(ctx, "/p/a", []byte("a2"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Delete(ctx, "/p/b", 0); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, db, "/p/aa", "new")
	if _, err := db.Delete(ctx, "/p/c", 0); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, db, "/p/c", "c2")
	mustCreate(t, db, "/q/x", "other prefix")

	res, err := db.List(ctx, "/p/", ListOptions{Revision: at})
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != at || !sameKVs(res.KVs, before.KVs) {
		t.Fatalf("list at %d:\n got %+v\nwant %+v", at, res.KVs, before.KVs)
	}
	// Paging at that revision, one key a page.
	var paged []KeyValue
	opts := ListOptions{Revision: at, Limit: 1}
	for {
		res, err := db.List(ctx, "/p/", opts)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, res.KVs...)
		if res.Continue == "" {
			break
		}
		opts.Continue = res.Continue
	}
	if !sameKVs(paged, before.KVs) {
		t.Fatalf("paged at %d: %+v", at, paged)
	}
	if _, err := db.List(ctx, "/p/", ListOptions{Revision: db.Revision() + 1}); !errors.Is(err, ErrFutureRevision) {
		t.Fatalf("future list: %v", err)
	}
	if err := db.Compact(ctx, at+1); err != nil {
		t.Fatal(err)
	}
	if _, err := db.List(ctx, "/p/", ListOptions{Revision: at}); !errors.Is(err, ErrCompacted) {
		t.Fatalf("compacted list: %v", err)
	}
	if _, err := db.List(ctx, "/p/", ListOptions{Revision: at + 1}); err != nil {
		t.Fatalf("list at the compacted revision itself: %v", err)
	}
}

func sameKVs(a, b []KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) ||
			a[i].CreateRevision != b[i].CreateRevision || a[i].ModRevision != b[i].ModRevision {
			return false
		}
	}
	return true
}

func TestCompact(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	for i := range 10 {
		mustCreate(t, db, fmt.Sprintf("/k/%d", i), "v")
	}
	if err := db.Compact(ctx, 11); !errors.Is(err, ErrFutureRevision) {
		t.Fatalf("compact future: %v", err)
	}
	if err := db.Compact(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if err := db.Compact(ctx, 3); err != nil {
		t.Fatalf("compact older (no-op): %v", err)
	}
	if _, err := db.Watch(ctx, "/k/", 4); !errors.Is(err, ErrCompacted) {
		t.Fatalf("watch compacted: %v", err)
	}
	w, err := db.Watch(ctx, "/k/", 5)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for want := int64(6); want <= 10; want++ {
		if e := <-w.Events(); e.Revision() != want {
			t.Fatalf("replay after compact: got %d want %d", e.Revision(), want)
		}
	}
	// Keys are untouched by compaction.
	if res, _ := db.List(ctx, "/k/", ListOptions{}); len(res.KVs) != 10 {
		t.Fatalf("compaction lost keys: %d", len(res.KVs))
	}
	if err := db.Compact(ctx, 10); err != nil {
		t.Fatal(err)
	}
}

func TestHistoryTrim(t *testing.T) {
	db := openTestDB(t, Config{HistorySize: 20})
	ctx := ctxT(t)
	for i := range 50 {
		mustCreate(t, db, fmt.Sprintf("/k/%02d", i), "v")
	}
	if _, err := db.Watch(ctx, "/k/", 29); !errors.Is(err, ErrCompacted) {
		t.Fatalf("watch behind trimmed history: %v", err)
	}
	if _, err := db.List(ctx, "/k/", ListOptions{Revision: 29}); !errors.Is(err, ErrCompacted) {
		t.Fatalf("list behind trimmed history: %v", err)
	}
	res, err := db.List(ctx, "/k/", ListOptions{Revision: 30})
	if err != nil || len(res.KVs) != 30 {
		t.Fatalf("list at oldest retained revision: %d %v", len(res.KVs), err)
	}
}

func TestRestart(t *testing.T) {
	db := openTestDB(t, Config{HistorySize: 100})
	ctx := ctxT(t)
	mustCreate(t, db, "/k/a", "a")
	rb := mustCreate(t, db, "/k/b", "b")
	ra, _ := db.Update(ctx, "/k/a", []byte("a2"), 0)
	db.Delete(ctx, "/k/b", rb)
	before, _ := db.List(ctx, "/", ListOptions{})
	at2, _ := db.List(ctx, "/", ListOptions{Revision: 2})
	db.reopen()
	if db.Revision() != 4 {
		t.Fatalf("revision after restart %d", db.Revision())
	}
	after, _ := db.List(ctx, "/", ListOptions{})
	if !sameKVs(before.KVs, after.KVs) {
		t.Fatalf("values changed across restart: %+v vs %+v", before.KVs, after.KVs)
	}
	kv, _ := db.Get(ctx, "/k/a")
	if kv.CreateRevision != 1 || kv.ModRevision != ra {
		t.Fatalf("revisions after restart: %+v", kv)
	}
	at2b, err := db.List(ctx, "/", ListOptions{Revision: 2})
	if err != nil || !sameKVs(at2.KVs, at2b.KVs) {
		t.Fatalf("history across restart: %v", err)
	}
	// A watch resumes from before the restart.
	w, err := db.Watch(ctx, "/", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	types := []EventType{EventCreate, EventUpdate, EventDelete}
	for i, want := range types {
		e := <-w.Events()
		if e.Type != want || e.Revision() != int64(i+2) {
			t.Fatalf("replayed event %d: %v at %d", i, e.Type, e.Revision())
		}
	}
	// Revisions continue from where they were.
	if r := mustCreate(t, db, "/k/c", "c"); r != 5 {
		t.Fatalf("next revision after restart: %d", r)
	}
	if e := <-w.Events(); e.Revision() != 5 || e.Type != EventCreate {
		t.Fatalf("live event after replay: %+v", e)
	}
}

func TestCanceledContext(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	if _, err := db.Create(ctx, "/k", []byte("v")); !errors.Is(err, context.Canceled) {
		t.Fatalf("create with canceled context: %v", err)
	}
	if _, err := db.Get(ctx, "/k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("get with canceled context: %v", err)
	}
	if _, err := db.List(ctx, "/", ListOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("list with canceled context: %v", err)
	}
	if db.Revision() != 0 {
		t.Fatalf("canceled write committed: revision %d", db.Revision())
	}
	if _, err := db.Get(ctxT(t), "/k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("canceled write stored: %v", err)
	}
}

func TestMaxBatch(t *testing.T) {
	db := openTestDB(t, Config{MaxBatch: 3})
	ctx := ctxT(t)
	errs := make(chan error, 40)
	for i := range 40 {
		go func() {
			_, err := db.Create(ctx, fmt.Sprintf("/m/%d", i), []byte("x"))
			errs <- err
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	st := db.Stats()
	if st.Writes != 40 || st.Commits < 14 {
		t.Fatalf("40 writes in %d commits with MaxBatch 3 (%d counted)", st.Commits, st.Writes)
	}
}

// TestTrimKeepsValues: with a small history and keys updated, deleted and
// re-created, trimming drops exactly the values no one refers to (checked
// by the test helper) and lists at every retained revision match the
// snapshots taken at the time.
func TestTrimKeepsValues(t *testing.T) {
	db := openTestDB(t, Config{HistorySize: 15})
	ctx := ctxT(t)
	snaps := map[int64][]KeyValue{}
	for i := range 120 {
		k := fmt.Sprintf("/t/%d", i%5)
		var err error
		switch i % 4 {
		case 0, 1:
			if _, err = db.Update(ctx, k, []byte(fmt.Sprint("u", i)), 0); errors.Is(err, ErrNotFound) {
				_, err = db.Create(ctx, k, []byte(fmt.Sprint("c", i)))
			}
		case 2:
			if _, err = db.Delete(ctx, k, 0); errors.Is(err, ErrNotFound) {
				err = nil
			}
		case 3:
			if _, err = db.Create(ctx, k, []byte(fmt.Sprint("c", i))); errors.Is(err, ErrExists) {
				err = nil
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		res, err := db.List(ctx, "/t/", ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		snaps[res.Revision] = res.KVs
	}
	cur := db.Revision()
	for rev := cur - 15; rev <= cur; rev++ {
		want, ok := snaps[rev]
		if !ok {
			continue
		}
		res, err := db.List(ctx, "/t/", ListOptions{Revision: rev})
		if err != nil {
			t.Fatalf("list at %d: %v", rev, err)
		}
		if !sameKVs(res.KVs, want) {
			t.Fatalf("list at %d: %+v, want %+v", rev, res.KVs, want)
		}
	}
	db.reopen()
	w, err := db.Watch(ctx, "/t/", cur-15)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for want := cur - 14; want <= cur; want++ {
		e := nextEvent(t, w)
		if e.Revision() != want || (e.Type != EventCreate && e.Prev == nil) || e.KV.Value == nil {
			t.Fatalf("replayed %+v, want revision %d", e, want)
		}
	}
}

// TestListKnown: keys the caller knows at their revision come back without
// their value; the others, keys of a past revision and paging are as
// without it.
func TestListKnown(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	revs := map[string]int64{}
	for i := range 6 {
		key := fmt.Sprintf("/k/%d", i)
		revs[key] = mustCreate(t, db, key, fmt.Sprint(i))
	}
	at := db.Revision()
	// /k/1 changes after at: listed at at, its past state is not asked about.
	if _, err := db.Update(ctx, "/k/1", []byte("new"), 0); err != nil {
		t.Fatal(err)
	}
	var asked []string
	known := func(key string, rev int64) bool {
		asked = append(asked, key)
		// The caller knows the even keys, and /k/3 only at another revision.
		return (key == "/k/0" || key == "/k/2" || key == "/k/4") && rev == revs[key] || key == "/k/3" && rev != revs[key]
	}
	res, err := db.List(ctx, "/k/", ListOptions{Known: known})
	if err != nil || len(res.KVs) != 6 {
		t.Fatalf("list: %d keys, %v", len(res.KVs), err)
	}
	for i, kv := range res.KVs {
		knownKey := i == 0 || i == 2 || i == 4
		if (kv.Value == nil) != knownKey {
			t.Errorf("%s: value %q, known %v", kv.Key, kv.Value, knownKey)
		}
		if !knownKey && kv.Key != "/k/1" && string(kv.Value) != fmt.Sprint(i) {
			t.Errorf("%s: value %q", kv.Key, kv.Value)
		}
		if kv.ModRevision == 0 || kv.Key != fmt.Sprintf("/k/%d", i) {
			t.Errorf("%d: %+v", i, kv)
		}
	}
	asked = nil
	past, err := db.List(ctx, "/k/", ListOptions{Known: known, Revision: at})
	if err != nil || len(past.KVs) != 6 || string(past.KVs[1].Value) != "1" {
		t.Fatalf("list at %d: %+v %v", at, past.KVs, err)
	}
	for _, k := range asked {
		if k == "/k/1" {
			t.Errorf("asked about /k/1, whose listed state is a past one")
		}
	}
	// Paging: only listed keys are asked about.
	asked = nil
	page, err := db.List(ctx, "/k/", ListOptions{Known: known, Limit: 2})
	if err != nil || len(page.KVs) != 2 || page.Remaining != 4 || len(asked) != 2 {
		t.Fatalf("page: %d keys, remaining %d, asked %v, %v", len(page.KVs), page.Remaining, asked, err)
	}
}
