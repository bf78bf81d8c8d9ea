package store

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// reportLatency adds writes/s and p50/p99 latency (ms) to the benchmark.
func reportLatency(b *testing.B, lat []time.Duration, elapsed time.Duration, unit string) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), unit+"/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkBoltPut is the fsync floor: raw bbolt, one 1 KB put per
// db.Update transaction, sequential.
func BenchmarkBoltPut(b *testing.B) {
	bdb, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer bdb.Close()
	val := make([]byte, 1024)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		t0 := time.Now()
		err := bdb.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return bk.Put([]byte(fmt.Sprintf("/bench/key/%08d", i)), val)
		})
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	reportLatency(b, lat, time.Since(start), "puts")
}

// BenchmarkWrite: creates of 1 KB values with fsync, from 1 and 32
// concurrent writers.
func BenchmarkWrite(b *testing.B) {
	for _, writers := range []int{1, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			db := openTestDB(b, Config{})
			ctx := ctxT(b)
			val := make([]byte, 1024)
			var next atomic.Int64
			lats := make([][]time.Duration, writers)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						n := next.Add(1)
						if n > int64(b.N) {
							return
						}
						t0 := time.Now()
						if _, err := db.Create(ctx, fmt.Sprintf("/bench/key/%08d", n), val); err != nil {
							b.Error(err)
							return
						}
						lats[w] = append(lats[w], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			reportLatency(b, slices.Concat(lats...), elapsed, "writes")
			st := db.Stats()
			b.ReportMetric(float64(st.Writes)/float64(max(st.Commits, 1)), "writes/commit")
			b.ReportMetric(float64(st.PageWrites)/float64(max(st.Commits, 1)), "pwrites/commit")
		})
	}
}

// BenchmarkWatchDelivery: 100 watchers on a prefix, 8 writers. Two
// latencies per event and watcher: p50/p99-ms from the moment the commit is
// durable to the event reaching the watcher's reader (the watch path
// itself), and e2e-p99-ms from the start of the Create call (adding the
// write's own wait for its fsync).
func BenchmarkWatchDelivery(b *testing.B) {
	const watchers, writers = 100, 8
	db := openTestDB(b, Config{})
	ctx := ctxT(b)
	base := time.Now()
	start := db.Revision() + 1
	durable := make([]time.Duration, b.N+2) // by revision - start
	db.durableHook = func(first, last int64) {
		now := time.Since(base)
		for r := first; r <= last; r++ {
			durable[r-start] = now
		}
	}
	lats := make([][]time.Duration, watchers)
	e2e := make([][]time.Duration, watchers)
	var wwg sync.WaitGroup
	for i := range watchers {
		w, err := db.Watch(ctx, "/bench/", 0)
		if err != nil {
			b.Fatal(err)
		}
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			defer w.Stop()
			for e := range w.Events() {
				if string(e.KV.Value) == "end" {
					return
				}
				now := time.Since(base)
				sent := time.Duration(binary.BigEndian.Uint64(e.KV.Value))
				lats[i] = append(lats[i], now-durable[e.Revision()-start])
				e2e[i] = append(e2e[i], now-sent)
			}
			b.Errorf("watch ended: %v", w.Err())
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
			val := make([]byte, 1024)
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				binary.BigEndian.PutUint64(val, uint64(time.Since(base)))
				if _, err := db.Create(ctx, fmt.Sprintf("/bench/key/%08d", n), val); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if _, err := db.Create(ctx, "/bench/end", []byte("end")); err != nil {
		b.Fatal(err)
	}
	wwg.Wait()
	elapsed := time.Since(t0)
	b.StopTimer()
	all := slices.Concat(e2e...)
	slices.Sort(all)
	b.ReportMetric(float64(all[int(0.99*float64(len(all)-1))])/1e6, "e2e-p99-ms")
	reportLatency(b, slices.Concat(lats...), elapsed, "deliveries")
}

// procIO reads this process's write counters from /proc/self/io: wchar
// (bytes passed to write-like syscalls, including the Go runtime's 8-byte
// eventfd wake-ups) and write_bytes (bytes sent to the block layer: the
// disk writes).
func procIO(tb testing.TB) (wchar, writeBytes int64) {
	tb.Helper()
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Skipf("no /proc/self/io: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "wchar":
			wchar = n
		case "write_bytes":
			writeBytes = n
		}
	}
	return wchar, writeBytes
}

// idleWrites opens a store, writes to it, starts watchers, then measures
// what the process writes during idle. It returns the bytes written (wchar,
// write_bytes) and whether the file changed (size or mtime).
func idleWrites(tb testing.TB, idle time.Duration) (wchar, writeBytes int64, changed bool) {
	db := openTestDB(tb, Config{})
	ctx := ctxT(tb)
	for i := range 200 {
		if _, err := db.Create(ctx, fmt.Sprintf("/idle/%d", i), []byte("v")); err != nil {
			tb.Fatal(err)
		}
	}
	for range 10 {
		w, err := db.Watch(ctx, "/idle/", 0)
		if err != nil {
			tb.Fatal(err)
		}
		defer w.Stop()
	}
	time.Sleep(50 * time.Millisecond) // let watchers settle
	before, err := os.Stat(db.Path())
	if err != nil {
		tb.Fatal(err)
	}
	w0, b0 := procIO(tb)
	time.Sleep(idle)
	w1, b1 := procIO(tb)
	after, err := os.Stat(db.Path())
	if err != nil {
		tb.Fatal(err)
	}
	changed = !before.ModTime().Equal(after.ModTime()) || before.Size() != after.Size()
	return w1 - w0, b1 - b0, changed
}

// BenchmarkIdleDiskWrites reports the bytes written during one second of
// idle with the store open and 10 watchers waiting (target: 0). It measures
// one interval whatever b.N is.
func BenchmarkIdleDiskWrites(b *testing.B) {
	wchar, wbytes, changed := idleWrites(b, time.Second)
	if changed {
		b.Error("database file changed while idle")
	}
	b.ReportMetric(float64(wchar), "idle-wchar-B/s")
	b.ReportMetric(float64(wbytes), "idle-write_bytes-B/s")
}

// TestIdleNoWrites: nothing is written to disk while nothing changes.
// (wchar is not checked: it also counts the Go runtime's 8-byte eventfd
// wake-ups, which are not disk writes.)
func TestIdleNoWrites(t *testing.T) {
	wchar, wbytes, changed := idleWrites(t, 500*time.Millisecond)
	if wbytes != 0 || changed {
		t.Fatalf("idle store wrote: write_bytes %d, file changed %t (wchar %d)", wbytes, changed, wchar)
	}
}

// BenchmarkOpen: opening a store of 10,000 1 KB keys (plus their history),
// with and without bbolt's full consistency check.
func BenchmarkOpen(b *testing.B) {
	path := filepath.Join(b.TempDir(), "state.db")
	db, err := Open(Config{Path: path}, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	ctx := ctxT(b)
	val := make([]byte, 1024)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := next.Add(1); n <= 10000; n = next.Add(1) {
				if _, err := db.Create(ctx, fmt.Sprintf("/registry/pods/ns/%08d", n), val); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	info, _ := os.Stat(path)
	for _, skip := range []bool{false, true} {
		b.Run(fmt.Sprintf("check=%t", !skip), func(b *testing.B) {
			for range b.N {
				db, err := Open(Config{Path: path, SkipIntegrityCheck: skip}, testLogger(b))
				if err != nil {
					b.Fatal(err)
				}
				if err := db.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(info.Size())/(1<<20), "file-MB")
		})
	}
}
