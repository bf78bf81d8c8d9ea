package store

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestMain lets the test binary re-execute itself as a child process (for
// the crash and lock tests): ORCH_STORE_CHILD names the child's role.
func TestMain(m *testing.M) {
	if role := os.Getenv("ORCH_STORE_CHILD"); role != "" {
		if err := runChild(role, os.Getenv("ORCH_STORE_PATH")); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testLogger(_ testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testDB is a DB on a temporary file that is closed and checked (bbolt's
// consistency check and the store's own invariants) when the test ends.
type testDB struct {
	*DB
	t testing.TB
}

// openTestDB opens a fresh store in a temp dir; cfg.Path is filled in when
// empty.
func openTestDB(t testing.TB, cfg Config) *testDB {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "db", "state.db")
	}
	db, err := Open(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	tdb := &testDB{DB: db, t: t}
	t.Cleanup(func() {
		if err := tdb.DB.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		checkFile(t, cfg.Path)
	})
	return tdb
}

// reopen closes the store and opens the same file again.
func (d *testDB) reopen() {
	d.t.Helper()
	cfg := d.cfg
	if err := d.DB.Close(); err != nil {
		d.t.Fatalf("close: %v", err)
	}
	db, err := Open(cfg, testLogger(d.t))
	if err != nil {
		d.t.Fatalf("reopen: %v", err)
	}
	d.DB = db
}

// checkFile runs bbolt's consistency check on a closed database file and
// verifies the store's invariants: the history covers (compact, rev]
// contiguously and every key's revisions are at most the current revision.
func checkFile(t testing.TB, path string) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Errorf("check %s: open: %v", path, err)
		return
	}
	defer bdb.Close()
	err = bdb.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("bbolt check: %w", err)
		}
		st, err := readState(tx)
		if err != nil {
			return err
		}
		want := st.compact + 1
		prevs := 0
		err = tx.Bucket(bucketHistory).ForEach(func(k, v []byte) error {
			rev, err := decodeRevKey(k)
			if err != nil {
				return err
			}
			if rev != want {
				return fmt.Errorf("history: revision %d, want %d", rev, want)
			}
			want++
			e, err := readEvent(tx, rev, v)
			if e.Prev != nil {
				prevs++
			}
			return err
		})
		if err != nil {
			return err
		}
		if want != st.rev+1 {
			return fmt.Errorf("history ends at %d, revision is %d", want-1, st.rev)
		}
		keys := 0
		err = tx.Bucket(bucketKV).ForEach(func(k, v []byte) error {
			keys++
			kv, err := readKV(tx, string(k), v)
			if err != nil {
				return err
			}
			if kv.CreateRevision < 1 || kv.CreateRevision > kv.ModRevision || kv.ModRevision > st.rev {
				return fmt.Errorf("key %q: create %d, mod %d, current %d", k, kv.CreateRevision, kv.ModRevision, st.rev)
			}
			return nil
		})
		if err != nil {
			return err
		}
		// values holds the current keys' values and the retained Prevs, no more.
		if n := tx.Bucket(bucketValues).Stats().KeyN; n != keys+prevs {
			return fmt.Errorf("%d values stored, want %d (%d keys + %d previous values)", n, keys+prevs, keys, prevs)
		}
		return nil
	})
	if err != nil {
		t.Errorf("check %s: %v", path, err)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
