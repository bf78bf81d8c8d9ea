package store

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// dbMapping is the address range of path's mapping in this process.
func dbMapping(t *testing.T, path string) (start, end uint64) {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Skipf("no /proc/self/maps: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != path {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("maps line %q", sc.Text())
		}
		start, end = s, e
		found++
	}
	if found != 1 {
		t.Fatalf("%d mappings of %s, want 1", found, path)
	}
	return start, end
}

// TestDatabaseMappedOnce: the database is mapped with room to grow from the
// start, so that commits growing the file do not remap it (a remap copies
// every open node's keys and values onto the heap and stalls readers).
func TestDatabaseMappedOnce(t *testing.T) {
	db := openTestDB(t, Config{})
	start, end := dbMapping(t, db.Path())
	if size := end - start; size < uint64(initialMmapSize()) {
		t.Fatalf("database mapped with %d bytes, want at least %d", size, initialMmapSize())
	}
	if info, err := os.Stat(db.Path()); err != nil || info.Size() > fileGrowStep+1<<20 {
		t.Fatalf("fresh database file: %v, %d bytes (grown by more than %d past its data?)", err, info.Size(), fileGrowStep)
	}
	value := make([]byte, 4096)
	for i := range 4000 { // ~16 MB: the file doubles several times
		if _, err := db.Create(ctxT(t), fmt.Sprintf("/registry/core/configmaps/default/cm-%05d", i), value); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.List(ctxT(t), "/registry/core/configmaps/", ListOptions{}); err != nil { // flushes into bbolt
		t.Fatal(err)
	}
	info, err := os.Stat(db.Path())
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() < 16<<20 {
		t.Fatalf("file has %d bytes after 16 MB of writes", info.Size())
	}
	if s, e := dbMapping(t, db.Path()); s != start || e != end {
		t.Errorf("database remapped: %x-%x, then %x-%x", start, end, s, e)
	}
}
