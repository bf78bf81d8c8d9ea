package events

import (
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/orch-dev/orch/internal/kube"
)

// sink records what the broadcaster writes.
type sink struct {
	mu      sync.Mutex
	created map[string]int // by message
	patched map[string]int
}

func (s *sink) Create(e *corev1.Event) (*corev1.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.created[e.Message]++
	return e, nil
}

func (s *sink) Update(e *corev1.Event) (*corev1.Event, error) { return e, nil }

func (s *sink) Patch(e *corev1.Event, _ []byte) (*corev1.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.patched[e.Message]++
	return e, nil
}

func (s *sink) counts(msg string) (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created[msg], s.patched[msg]
}

// TestCorrelatorCacheBounded: a repeat of a recent event is folded into it
// (a patch of its count); a repeat of one that CorrelatorCache newer
// distinct events pushed out is written anew.
func TestCorrelatorCacheBounded(t *testing.T) {
	b := NewBroadcaster()
	defer b.Shutdown()
	s := &sink{created: map[string]int{}, patched: map[string]int{}}
	w := b.StartRecordingToSink(s)
	defer w.Stop()
	rec := b.NewRecorder(kube.Scheme(), corev1.EventSource{Component: "test"})
	pod := func(i int) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("p", i), Namespace: "default", UID: "u"}}
	}
	n := CorrelatorCache + 10
	for i := range n {
		rec.Event(pod(i), corev1.EventTypeWarning, "FailedScheduling", fmt.Sprint("m", i))
	}
	rec.Event(pod(n-1), corev1.EventTypeWarning, "FailedScheduling", fmt.Sprint("m", n-1)) // recent
	rec.Event(pod(0), corev1.EventTypeWarning, "FailedScheduling", "m0")                   // evicted
	deadline := time.Now().Add(20 * time.Second)
	for {
		c0, p0 := s.counts("m0")
		cl, pl := s.counts(fmt.Sprint("m", n-1))
		if c0 == 2 && p0 == 0 && cl == 1 && pl == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("first event: %d creates %d patches (want 2/0); last: %d/%d (want 1/1)", c0, p0, cl, pl)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
