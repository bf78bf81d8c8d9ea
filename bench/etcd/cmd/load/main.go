// Command load drives an etcd server with concurrent clients putting fixed
// size values and prints throughput and latency percentiles, the etcd side
// of scripts/bench-store.sh's comparison with orch's store.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func run() error {
	endpoint := flag.String("endpoint", "127.0.0.1:23790", "etcd client endpoint (loopback only)")
	clients := flag.Int("clients", 32, "concurrent clients")
	total := flag.Int("puts", 10000, "total puts")
	size := flag.Int("size", 1024, "value size in bytes")
	flag.Parse()
	if *clients < 1 || *total < 1 || *size < 0 {
		return fmt.Errorf("clients and puts must be positive, size non-negative")
	}

	conns := make([]*clientv3.Client, *clients)
	for i := range conns {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{*endpoint}, DialTimeout: 5 * time.Second})
		if err != nil {
			return fmt.Errorf("connect %s: %w", *endpoint, err)
		}
		defer c.Close()
		conns[i] = c
	}
	value := string(make([]byte, *size))
	ctx := context.Background()
	// Warm up every connection so that dialing is not measured.
	for i, c := range conns {
		if _, err := c.Put(ctx, fmt.Sprintf("/bench/warm/%d", i), value); err != nil {
			return fmt.Errorf("warm-up put: %w", err)
		}
	}

	var next atomic.Int64
	lat := make([][]time.Duration, *clients)
	errs := make(chan error, *clients)
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > int64(*total) {
					return
				}
				t0 := time.Now()
				if _, err := c.Put(ctx, fmt.Sprintf("/bench/key/%08d", n), value); err != nil {
					errs <- fmt.Errorf("put: %w", err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	pct := func(p float64) float64 {
		return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000
	}
	fmt.Printf("etcd clients=%d puts=%d size=%d puts/s=%.0f p50_ms=%.2f p99_ms=%.2f\n",
		*clients, len(all), *size, float64(len(all))/elapsed.Seconds(), pct(0.50), pct(0.99))
	return nil
}
