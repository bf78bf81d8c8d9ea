package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// populated returns the path of a closed store holding some data.
func populated(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := Open(Config{Path: path}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 400 {
		if _, err := db.Create(ctxT(t), fmt.Sprintf("/k/%04d", i), bytes.Repeat([]byte{'v'}, 1024)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// expectCorrupt opens path, wants ErrCorrupt naming the file, and checks
// the failed open did not change the file.
func expectCorrupt(t *testing.T, path string, cfg Config) {
	t.Helper()
	before := fileSum(t, path)
	cfg.Path = path
	db, err := Open(cfg, testLogger(t))
	if err == nil {
		db.Close()
		t.Fatal("damaged file opened")
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("want ErrCorrupt naming %s, got: %v", path, err)
	}
	if fileSum(t, path) != before {
		t.Fatal("failed open modified the file")
	}
	t.Logf("error: %v", err)
}

func TestOpenEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	expectCorrupt(t, path, Config{})
}

func TestOpenGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	junk := make([]byte, 64<<10)
	for i := range junk {
		junk[i] = byte(rand.IntN(256))
	}
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	expectCorrupt(t, path, Config{})
	if err := os.WriteFile(path, []byte("tiny"), 0o600); err != nil {
		t.Fatal(err)
	}
	expectCorrupt(t, path, Config{})
}

func TestOpenTruncated(t *testing.T) {
	for _, keep := range []float64{0.9, 0.5, 0.1} {
		t.Run(fmt.Sprint(keep), func(t *testing.T) {
			path := populated(t)
			size := int64(float64(usedSize(t, path))*keep) &^ 4095
			if err := os.Truncate(path, size); err != nil {
				t.Fatal(err)
			}
			expectCorrupt(t, path, Config{})
			expectCorrupt(t, path, Config{SkipIntegrityCheck: true})
		})
	}
}

func TestOpenDamagedPage(t *testing.T) {
	path := populated(t)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Zero a page in the middle of the tree (pages 0 and 1 are the metas;
	// the file extends past the tree's last page).
	page := usedSize(t, path) / 4096 / 2
	if _, err := f.WriteAt(make([]byte, 4096), page*4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	expectCorrupt(t, path, Config{})
}

func TestOpenDamagedMeta(t *testing.T) {
	path := populated(t)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{64, 4096 + 64} { // inside both meta pages
		if _, err := f.WriteAt([]byte("garbage!garbage!"), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	expectCorrupt(t, path, Config{})
}

func TestOpenForeignBolt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("someone-else"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	})
	bdb.Close()
	if err != nil {
		t.Fatal(err)
	}
	expectCorrupt(t, path, Config{})
}

func TestOpenDirectory(t *testing.T) {
	path := t.TempDir()
	if _, err := Open(Config{Path: path}, testLogger(t)); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("open of a directory: %v", err)
	}
}

// TestOpenUnfinishedInit: a bbolt file with no buckets (a crash during the
// very first open) is initialized, not refused.
func TestOpenUnfinishedInit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	bdb.Close()
	db := openTestDB(t, Config{Path: path})
	mustCreate(t, db, "/k", "v")
}

// usedSize is the size of the pages a closed database uses (the file may be
// longer: bbolt grows it ahead).
func usedSize(t *testing.T, path string) int64 {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	tx, err := bdb.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	return tx.Size()
}
