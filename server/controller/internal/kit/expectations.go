package kit

import (
	"sync"
	"time"
)

// ExpectationsTTL is how long unobserved expectations hold a controller
// back before it trusts its cache again (upstream uses five minutes).
const ExpectationsTTL = 5 * time.Minute

// Expectations records the creations and deletions a controller issued and
// has not yet seen in its informer, so it never acts twice on a lagging
// cache (upstream's ControllerExpectations with UID tracking for deletes).
type Expectations struct {
	mu  sync.Mutex
	m   map[string]*expectation
	now func() time.Time
}

type expectation struct {
	add int
	del map[string]struct{}
	at  time.Time
}

// NewExpectations makes an empty expectation table.
func NewExpectations() *Expectations {
	return &Expectations{m: map[string]*expectation{}, now: time.Now}
}

// ExpectCreations records that n pods are being created for key.
func (e *Expectations) ExpectCreations(key string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[key] = &expectation{add: n, del: map[string]struct{}{}, at: e.now()}
}

// ExpectDeletions records the pods (by key) being deleted for key.
func (e *Expectations) ExpectDeletions(key string, pods []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := &expectation{del: make(map[string]struct{}, len(pods)), at: e.now()}
	for _, p := range pods {
		x.del[p] = struct{}{}
	}
	e.m[key] = x
}

// CreationObserved lowers the creations expected for key by one (a create
// was seen, or failed).
func (e *Expectations) CreationObserved(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok && x.add > 0 {
		x.add--
	}
}

// DeletionObserved marks the deletion of pod as seen for key.
func (e *Expectations) DeletionObserved(key, pod string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		delete(x.del, pod)
	}
}

// Satisfied reports whether key has nothing outstanding (or its
// expectations expired), so a sync may act on the cache.
func (e *Expectations) Satisfied(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	if !ok {
		return true
	}
	if x.add <= 0 && len(x.del) == 0 {
		return true
	}
	return e.now().Sub(x.at) > ExpectationsTTL
}

// Delete forgets key (its owner is gone).
func (e *Expectations) Delete(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, key)
}
