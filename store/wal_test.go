package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// crashReopen closes the store without its final checkpoint (pending
// writes stay in the log only, as after a crash) and opens it again.
func (d *testDB) crashReopen() {
	d.t.Helper()
	d.DB.skipFinalCheckpoint = true
	d.reopen()
}

// history returns every event from revision from on, read through a watch.
func history(t *testing.T, db *testDB, prefix string, from int64) []Event {
	t.Helper()
	w, err := db.Watch(ctxT(t), prefix, from)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var out []Event
	for {
		select {
		case e := <-w.Events():
			out = append(out, e)
		case <-time.After(200 * time.Millisecond):
			return out
		}
	}
}

// TestWALReplay: writes acknowledged but not checkpointed (creates,
// updates, deletes, a compaction) come back after a crash with the same
// revisions, values, history and Prev values.
func TestWALReplay(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	for i := range 20 {
		mustCreate(t, db, fmt.Sprintf("/r/%02d", i), fmt.Sprint("v", i))
	}
	if _, err := db.Update(ctx, "/r/03", []byte("v3b"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Delete(ctx, "/r/04", 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Compact(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if st := db.Stats(); st.Checkpoints != 0 {
		t.Fatalf("checkpointed before any reader asked: %+v", st)
	}
	// Pending writes are served from memory.
	if kv, err := db.Get(ctx, "/r/03"); err != nil || string(kv.Value) != "v3b" || kv.ModRevision != 21 {
		t.Fatalf("get of a pending update: %+v %v", kv, err)
	}
	if _, err := db.Get(ctx, "/r/04"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of a pending delete: %v", err)
	}
	db.crashReopen()
	if db.Revision() != 22 {
		t.Fatalf("revision after replay %d, want 22", db.Revision())
	}
	if kv, err := db.Get(ctx, "/r/03"); err != nil || string(kv.Value) != "v3b" || kv.CreateRevision != 4 || kv.ModRevision != 21 {
		t.Fatalf("replayed update: %+v %v", kv, err)
	}
	if _, err := db.Get(ctx, "/r/04"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("replayed delete: %v", err)
	}
	if _, err := db.Watch(ctx, "/", 4); !errors.Is(err, ErrCompacted) {
		t.Fatalf("replayed compaction: watch from 4: %v", err)
	}
	evs := history(t, db, "/r/", 19)
	if len(evs) != 3 || evs[1].Type != EventUpdate || string(evs[1].Prev.Value) != "v3" ||
		evs[2].Type != EventDelete || string(evs[2].KV.Value) != "v4" || evs[2].Prev.ModRevision != 5 {
		t.Fatalf("replayed history: %+v", evs)
	}
	// The store goes on from there, and survives a second crash.
	if r := mustCreate(t, db, "/r/new", "n"); r != 23 {
		t.Fatalf("revision after replay: %d", r)
	}
	db.crashReopen()
	if kv, err := db.Get(ctx, "/r/new"); err != nil || kv.ModRevision != 23 {
		t.Fatalf("after the second crash: %+v %v", kv, err)
	}
}

// TestWALTornTail: a record cut short (the write that was in flight when
// the machine lost power, never acknowledged) is dropped; the records
// before it are replayed.
func TestWALTornTail(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	mustCreate(t, db, "/t/a", "a")
	mustCreate(t, db, "/t/b", "b")
	walPath := db.Path() + ".wal"
	good := db.wal.off
	mustCreate(t, db, "/t/c", "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc")
	db.DB.skipFinalCheckpoint = true
	if err := db.DB.Close(); err != nil {
		t.Fatal(err)
	}
	// Cut the last record in the middle of its value.
	if err := os.Truncate(walPath, good+20); err != nil {
		t.Fatal(err)
	}
	ndb, err := Open(db.cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	db.DB = ndb
	if db.Revision() != 2 {
		t.Fatalf("revision %d, want 2", db.Revision())
	}
	if _, err := db.Get(ctx, "/t/c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("torn record replayed: %v", err)
	}
	if kv, err := db.Get(ctx, "/t/b"); err != nil || string(kv.Value) != "b" {
		t.Fatalf("record before the torn one: %+v %v", kv, err)
	}
	// Revision 3 is given again, to a new write.
	if r := mustCreate(t, db, "/t/d", "d"); r != 3 {
		t.Fatalf("next revision %d", r)
	}
}

// TestWALStaleRecordsIgnored: after a checkpoint the log starts again at
// its beginning; the longer old records behind the new tail are never
// replayed.
func TestWALStaleRecordsIgnored(t *testing.T) {
	db := openTestDB(t, Config{})
	ctx := ctxT(t)
	for i := range 50 {
		mustCreate(t, db, fmt.Sprintf("/s/%02d", i), "a fairly long value to make the old records long")
	}
	if _, err := db.List(ctx, "/s/", ListOptions{}); err != nil { // checkpoints
		t.Fatal(err)
	}
	if st := db.Stats(); st.Checkpoints != 1 {
		t.Fatalf("a list did not checkpoint: %+v", st)
	}
	if _, err := db.Update(ctx, "/s/00", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	db.crashReopen()
	if db.Revision() != 51 {
		t.Fatalf("revision %d, want 51", db.Revision())
	}
	res, err := db.List(ctx, "/s/", ListOptions{})
	if err != nil || len(res.KVs) != 50 || string(res.KVs[0].Value) != "x" {
		t.Fatalf("after replay: %d keys, %v", len(res.KVs), err)
	}
}

// TestWALCheckpointTriggers: the interval, the size bound and Close fold
// the log into the bbolt file.
func TestWALCheckpointTriggers(t *testing.T) {
	t.Run("interval", func(t *testing.T) {
		db := openTestDB(t, Config{CheckpointInterval: 20 * time.Millisecond})
		mustCreate(t, db, "/i/a", "a")
		deadline := time.Now().Add(10 * time.Second)
		for db.Stats().Checkpoints == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no checkpoint after the interval")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if db.pendingN.Load() != 0 {
			t.Fatal("still pending after the checkpoint")
		}
	})
	t.Run("writes", func(t *testing.T) {
		db := openTestDB(t, Config{CheckpointWrites: 10})
		for i := range 25 {
			mustCreate(t, db, fmt.Sprintf("/w/%d", i), "v")
		}
		if n := db.Stats().Checkpoints; n != 2 {
			t.Fatalf("%d checkpoints for 25 writes at 10 a checkpoint", n)
		}
	})
	t.Run("close", func(t *testing.T) {
		db := openTestDB(t, Config{})
		mustCreate(t, db, "/c/a", "a")
		path := db.Path()
		db.reopen()
		if st, err := os.Stat(path + ".wal"); err != nil || st.Size() == 0 {
			t.Fatalf("log: %v", err)
		}
		// Everything was in the bbolt file: nothing to replay.
		recs, err := db.wal.replay(db.wal.epoch, db.Revision())
		if err != nil || len(recs) != 0 {
			t.Fatalf("after a clean close the log replays %d records (%v)", len(recs), err)
		}
	})
}

// TestWALLeftBesideNewFile: a log whose database file was moved away is
// not replayed into the new database.
func TestWALLeftBesideNewFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	db, err := Open(Config{Path: path}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Create(ctxT(t), "/old", []byte("x")); err != nil {
		t.Fatal(err)
	}
	db.skipFinalCheckpoint = true
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	db, err = Open(Config{Path: path}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Revision() != 0 {
		t.Fatalf("new database at revision %d", db.Revision())
	}
	if _, err := db.Get(ctxT(t), "/old"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old log replayed into a new file: %v", err)
	}
}

// TestWALBadRecord: a whole, checksummed record that does not apply (an
// update of a key that does not exist) is damage: Open fails with
// ErrCorrupt naming the log, and neither file changes.
func TestWALBadRecord(t *testing.T) {
	db := openTestDB(t, Config{})
	mustCreate(t, db, "/b/a", "a")
	path := db.Path()
	cfg := db.cfg
	epoch := db.wal.epoch
	db.reopen() // checkpoint: the log restarts with epoch+1
	epoch++
	if db.wal.epoch != epoch {
		t.Fatalf("epoch %d after a checkpoint, want %d", db.wal.epoch, epoch)
	}
	db.DB.skipFinalCheckpoint = true
	if err := db.DB.Close(); err != nil {
		t.Fatal(err)
	}
	// A record at revision 2 updating a key that was never created.
	payload := []byte{walVersion}
	payload = binary.BigEndian.AppendUint64(payload, uint64(epoch))
	payload = binary.AppendUvarint(payload, 0)
	payload = binary.AppendUvarint(payload, 1)
	payload = append(payload, byte(EventUpdate))
	payload = binary.AppendUvarint(payload, uint64(len("/b/missing")))
	payload = append(payload, "/b/missing"...)
	payload = binary.AppendUvarint(payload, 2)
	payload = binary.AppendUvarint(payload, 1)
	payload = append(payload, 'v')
	rec := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	rec = binary.LittleEndian.AppendUint32(rec, crc32.Checksum(payload, crcTable))
	rec = append(rec, payload...)
	if err := os.WriteFile(path+".wal", rec, 0o600); err != nil {
		t.Fatal(err)
	}
	dbSum, walSum := fileSum(t, path), fileSum(t, path+".wal")
	_, err := Open(cfg, testLogger(t))
	if !errors.Is(err, ErrCorrupt) || !containsAll(err.Error(), path+".wal", "/b/missing") {
		t.Fatalf("open with a bad log record: %v", err)
	}
	if fileSum(t, path) != dbSum || fileSum(t, path+".wal") != walSum {
		t.Fatal("a failed replay changed the files")
	}
	// Moved away, the database opens as it was at the checkpoint.
	if err := os.Remove(path + ".wal"); err != nil {
		t.Fatal(err)
	}
	ndb, err := Open(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	db.DB = ndb
	if db.Revision() != 1 {
		t.Fatalf("revision %d", db.Revision())
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// FuzzDecodeWALRecord: no payload makes the decoder panic or return events
// out of sequence.
func FuzzDecodeWALRecord(f *testing.F) {
	f.Add([]byte{walVersion, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 2, '/', 'a', 5, 1, 'x'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := decodeWALRecord(p)
		if err != nil {
			return
		}
		for i := 1; i < len(r.events); i++ {
			if r.events[i].KV.ModRevision != r.events[i-1].KV.ModRevision+1 {
				t.Fatalf("events out of sequence: %+v", r.events)
			}
		}
	})
}

// TestWritersGoOnWhileACheckpointRuns: a write that fills the log to its
// checkpoint threshold is answered before the checkpoint runs (it is
// durable in the log already) and can be read meanwhile; a flush (a LIST)
// waits for the checkpoint.
func TestWritersGoOnWhileACheckpointRuns(t *testing.T) {
	db := openTestDB(t, Config{CheckpointWrites: 1})
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	db.checkpointHook = func() {
		entered <- struct{}{}
		<-release
	}
	ctx := ctxT(t)
	created := make(chan error, 1)
	go func() {
		_, err := db.Create(ctx, "/k/a", []byte("1"))
		created <- err
	}()
	<-entered
	select {
	case err := <-created:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the write waited for the checkpoint")
	}
	if kv, err := db.Get(ctx, "/k/a"); err != nil || string(kv.Value) != "1" {
		close(release)
		t.Fatalf("read during the checkpoint: %v %v", kv, err)
	}
	listed := make(chan error, 1)
	go func() {
		_, err := db.List(ctx, "/k/", ListOptions{})
		listed <- err
	}()
	select {
	case err := <-listed:
		close(release)
		t.Fatalf("a list (flush) returned while the checkpoint ran: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-listed; err != nil {
		t.Fatal(err)
	}
	if n := db.checkpoints.Load(); n < 1 {
		t.Fatalf("%d checkpoints", n)
	}
}
