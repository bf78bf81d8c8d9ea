package scheduler

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/workqueue"
)

// parking holds the keys of pods no node could take until a cluster event
// may have changed that (a node added or changed, a pod gone) or they
// waited long enough. Pods leave it through the rate-limited queue, so
// every retry honours the pod's back-off: never a hot loop.
type parking struct {
	mu   sync.Mutex
	seq  uint64 // bumped by every move, see park
	keys map[string]time.Time
}

func newParking() *parking { return &parking{keys: map[string]time.Time{}} }

// sequence is the move counter a scheduling cycle remembers at its start.
func (p *parking) sequence() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seq
}

// park holds key, unless a move happened since the cycle that failed began
// (at seq): the event it missed may let the pod fit, so it is retried after
// its back-off instead.
func (p *parking) park(key string, seq uint64, now time.Time, q workqueue.TypedRateLimitingInterface[string]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seq != seq {
		q.AddRateLimited(key)
		return
	}
	p.keys[key] = now
}

func (p *parking) remove(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.keys, key)
}

// moveAll retries every parked pod (a cluster event).
func (p *parking) moveAll(q workqueue.TypedRateLimitingInterface[string]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	for k := range p.keys {
		q.AddRateLimited(k)
		delete(p.keys, k)
	}
}

// moveOlder retries the pods parked before t.
func (p *parking) moveOlder(t time.Time, q workqueue.TypedRateLimitingInterface[string]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, at := range p.keys {
		if at.Before(t) {
			q.AddRateLimited(k)
			delete(p.keys, k)
		}
	}
}

func (p *parking) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.keys)
}

// conditionPatch is a strategic merge patch of the pod's status setting c
// (merged by type), keeping the transition time when the status is
// unchanged.
func conditionPatch(p *corev1.Pod, c corev1.PodCondition) ([]byte, error) {
	for _, old := range p.Status.Conditions {
		if old.Type == c.Type && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
	}
	b, err := json.Marshal(map[string]any{
		// uid and resourceVersion: the condition is for this very pod as the
		// scheduler saw it (not one bound or changed since).
		"metadata": map[string]any{"uid": p.UID, "resourceVersion": p.ResourceVersion},
		"status":   map[string]any{"conditions": []corev1.PodCondition{c}},
	})
	if err != nil {
		return nil, fmt.Errorf("condition patch: %w", err)
	}
	return b, nil
}
