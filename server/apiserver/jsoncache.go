package apiserver

import (
	"encoding/json"
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// DefaultJSONCacheBytes bounds the JSON encodings the server keeps (about
// 10,000 pods' worth).
const DefaultJSONCacheBytes = 16 << 20

// jsonCache keeps the JSON encoding of stored objects, keyed by storage key
// and revision, so that LISTs, GETs and watch events of unchanged objects
// are written without decoding and re-encoding them. A key at a revision is
// immutable, so an entry is never stale: a newer revision of the key simply
// misses and replaces it. Entries are the list item form (no kind and
// apiVersion) of the storage version; only bytes are kept, never the
// decoded objects. The cache is bounded by size: past its bound, arbitrary
// entries are evicted (they are re-encoded on the next read).
type jsonCache struct {
	max int

	mu    sync.RWMutex
	size  int
	items map[string]jsonEntry
}

type jsonEntry struct {
	rev int64
	b   []byte
}

func newJSONCache(max int) *jsonCache {
	return &jsonCache{max: max, items: map[string]jsonEntry{}}
}

// get returns the encoding of key at rev, or nil.
func (c *jsonCache) get(key string, rev int64) []byte {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	e, ok := c.items[key]
	c.mu.RUnlock()
	if !ok || e.rev != rev {
		return nil
	}
	return e.b
}

// put records b as the encoding of key at rev, unless a newer revision is
// already there.
func (c *jsonCache) put(key string, rev int64, b []byte) {
	if c == nil || len(b) > c.max/16 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		if e.rev >= rev {
			return
		}
		c.size -= len(e.b) + len(key)
	}
	c.items[key] = jsonEntry{rev: rev, b: b}
	c.size += len(b) + len(key)
	if c.size <= c.max {
		return
	}
	// Evict down to three quarters (map order is random enough).
	for k, e := range c.items {
		if c.size <= c.max*3/4 {
			break
		}
		delete(c.items, k)
		c.size -= len(e.b) + len(k)
	}
}

// drop forgets key (it was deleted).
func (c *jsonCache) drop(key string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	if e, ok := c.items[key]; ok {
		delete(c.items, key)
		c.size -= len(e.b) + len(key)
	}
	c.mu.Unlock()
}

// bytes is what the entries hold (their encodings and keys).
func (c *jsonCache) bytes() int {
	if c == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.size
}

// len is the number of entries.
func (c *jsonCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.items)
}

// itemJSON marshals obj in list item form: without kind and apiVersion.
func itemJSON(obj runtime.Object) ([]byte, error) {
	gvk := obj.GetObjectKind().GroupVersionKind()
	obj.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{})
	b, err := json.Marshal(obj)
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return b, err
}

// withTypeMeta turns an item encoding into the encoding of the object on
// its own (kind and apiVersion first, as the JSON serializer writes them),
// appended to dst.
func withTypeMeta(dst []byte, gvk schema.GroupVersionKind, item []byte) []byte {
	dst = append(dst, `{"kind":`...)
	dst, _ = appendJSONString(dst, gvk.Kind)
	dst = append(dst, `,"apiVersion":`...)
	dst, _ = appendJSONString(dst, gvk.GroupVersion().String())
	if len(item) > 2 {
		dst = append(dst, ',')
	}
	return append(dst, item[1:]...)
}

func appendJSONString(dst []byte, s string) ([]byte, error) {
	b, err := json.Marshal(s)
	return append(dst, b...), err
}
