package kit

import (
	"errors"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pod(name string, node string, phase corev1.PodPhase, ready bool, restarts int32, created time.Time) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}}
	p.Spec.NodeName = node
	p.Status.Phase = phase
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.NewTime(created)}}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{RestartCount: restarts}}
	return p
}

func TestLessUseful(t *testing.T) {
	t0 := time.Unix(1000, 0)
	pods := []*corev1.Pod{
		pod("ready-old", "n", corev1.PodRunning, true, 0, t0),
		pod("ready-new", "n", corev1.PodRunning, true, 0, t0.Add(time.Minute)),
		pod("running-notready-restarts", "n", corev1.PodRunning, false, 5, t0),
		pod("running-notready", "n", corev1.PodRunning, false, 0, t0),
		pod("unknown", "n", corev1.PodUnknown, false, 0, t0),
		pod("pending", "n", corev1.PodPending, false, 0, t0),
		pod("unscheduled", "", corev1.PodPending, false, 0, t0),
	}
	want := []string{"unscheduled", "pending", "unknown", "running-notready-restarts", "running-notready", "ready-new", "ready-old"}
	for i := 0; i < 5; i++ {
		shuffled := append([]*corev1.Pod(nil), pods...)
		for j := range shuffled {
			k := (j*7 + i*3) % len(shuffled)
			shuffled[j], shuffled[k] = shuffled[k], shuffled[j]
		}
		sort.SliceStable(shuffled, func(a, b int) bool { return LessUseful(shuffled[a], shuffled[b]) })
		for j, p := range shuffled {
			if p.Name != want[j] {
				t.Fatalf("order %d: got %s at %d, want %s", i, p.Name, j, want[j])
			}
		}
	}
}

func TestSlowStart(t *testing.T) {
	var calls atomic.Int32
	done, err := SlowStart(10, 1, func() error {
		if calls.Add(1) > 3 {
			return errors.New("quota exceeded")
		}
		return nil
	})
	// Batches 1, 2 succeed; the batch of 4 fails entirely; nothing after.
	if err == nil || done != 3 || calls.Load() != 7 {
		t.Fatalf("done %d calls %d err %v", done, calls.Load(), err)
	}
	calls.Store(0)
	done, err = SlowStart(10, 1, func() error { calls.Add(1); return nil })
	if err != nil || done != 10 || calls.Load() != 10 {
		t.Fatalf("done %d calls %d err %v", done, calls.Load(), err)
	}
	done, err = SlowStart(0, 1, func() error { t.Fatal("called"); return nil })
	if done != 0 || err != nil {
		t.Fatal(done, err)
	}
}

func TestExpectations(t *testing.T) {
	e := NewExpectations()
	now := time.Unix(0, 0)
	e.now = func() time.Time { return now }
	if !e.Satisfied("a") {
		t.Fatal("unknown key not satisfied")
	}
	e.ExpectCreations("a", 2)
	e.CreationObserved("a")
	if e.Satisfied("a") {
		t.Fatal("satisfied with one creation outstanding")
	}
	e.CreationObserved("a")
	if !e.Satisfied("a") {
		t.Fatal("not satisfied after all creations")
	}
	e.ExpectDeletions("a", []string{"ns/p1", "ns/p2"})
	e.DeletionObserved("a", "ns/p1")
	e.DeletionObserved("a", "ns/p1")
	if e.Satisfied("a") {
		t.Fatal("satisfied with p2 outstanding")
	}
	now = now.Add(ExpectationsTTL + time.Second)
	if !e.Satisfied("a") {
		t.Fatal("expired expectations still hold")
	}
}
