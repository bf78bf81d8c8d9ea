package upcache

import (
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxShards is the number of shards of a store whose capacity allows it
// (as CoreDNS's cache: 256 shards of 39 entries make the default 9984).
const maxShards = 256

// key identifies a cached answer: the lower-cased question and the two
// header bits that change what an upstream resolver returns.
type key struct {
	name   string
	qtype  uint16
	qclass uint16
	do, cd bool
}

// entry is one cached answer. It is never changed once stored, so readers
// use it after releasing the shard's lock.
type entry struct {
	key key
	// msg is the answer with no OPT record, ID 0 and Compress off; it is
	// copied before each use.
	msg *dns.Msg
	// stored is when the answer arrived and ttl how long it may be served
	// (whole seconds).
	stored time.Time
	ttl    time.Duration
	// positive is true for answers with records (the success policy).
	positive bool
	// idx is the entry's position in its shard's items (guarded by the
	// shard's lock).
	idx int
}

// expired reports whether e may no longer be served at now.
func (e *entry) expired(now time.Time) bool {
	return now.Sub(e.stored) >= e.ttl
}

// store is a bounded map from key to entry, split into shards with a lock
// each. A shard at capacity evicts one entry chosen at random: O(1), and a
// flood of distinct names cannot grow it.
type store struct {
	seed   maphash.Seed
	shards []shard
}

type shard struct {
	mu    sync.RWMutex
	cap   int
	m     map[key]*entry
	items []*entry // the entries of m, for random eviction
}

// newStore returns a store holding at most capacity entries (capacity >= 1).
func newStore(capacity int) *store {
	n := min(capacity, maxShards)
	s := &store{seed: maphash.MakeSeed(), shards: make([]shard, n)}
	for i := range s.shards {
		c := capacity / n
		if i < capacity%n {
			c++
		}
		s.shards[i] = shard{cap: c, m: make(map[key]*entry)}
	}
	return s
}

func (s *store) shard(h uint64) *shard {
	return &s.shards[h%uint64(len(s.shards))]
}

// get returns the live entry for k (with hash h), or nil. An expired entry
// found is removed.
func (s *store) get(k key, h uint64, now time.Time) *entry {
	sh := s.shard(h)
	sh.mu.RLock()
	e := sh.m[k]
	sh.mu.RUnlock()
	if e == nil {
		return nil
	}
	if !e.expired(now) {
		return e
	}
	sh.mu.Lock()
	if sh.m[k] == e {
		sh.remove(e)
	}
	sh.mu.Unlock()
	return nil
}

// put stores e under e.key (with hash h), replacing an entry with the same
// key or, when the shard is full, a random one.
func (s *store) put(e *entry, h uint64) {
	sh := s.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old := sh.m[e.key]; old != nil {
		e.idx = old.idx
		sh.items[e.idx] = e
		sh.m[e.key] = e
		return
	}
	if len(sh.items) >= sh.cap {
		sh.remove(sh.items[rand.IntN(len(sh.items))])
	}
	e.idx = len(sh.items)
	sh.items = append(sh.items, e)
	sh.m[e.key] = e
}

// delete removes the entry for k (with hash h), if any.
func (s *store) delete(k key, h uint64) {
	sh := s.shard(h)
	sh.mu.Lock()
	if e := sh.m[k]; e != nil {
		sh.remove(e)
	}
	sh.mu.Unlock()
}

// len returns the number of entries held, live or expired.
func (s *store) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// remove takes e out of the shard; the caller holds the write lock.
func (sh *shard) remove(e *entry) {
	last := len(sh.items) - 1
	moved := sh.items[last]
	sh.items[e.idx] = moved
	moved.idx = e.idx
	sh.items[last] = nil
	sh.items = sh.items[:last]
	delete(sh.m, e.key)
}
