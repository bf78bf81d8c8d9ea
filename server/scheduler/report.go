package scheduler

import (
	"context"
	"sync"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
)

// reporter writes why pods cannot be scheduled — the FailedScheduling event
// and the PodScheduled=False condition — off the scheduling loop and at a
// bounded rate, as kube-scheduler's requests are bounded (its client allows
// 50 a second, bursts of 100, by default). A burst of thousands of pods that
// fit nowhere then does not spend the API server's CPU on their reports
// while it is still taking the pods in: a pod's report waits its turn, only
// its latest report is kept, and a pod scheduled or deleted before its turn
// gets none.
type reporter struct {
	queue workqueue.TypedInterface[string]
	limit *rate.Limiter

	mu      sync.Mutex
	pending map[string]report
}

// report is why one pod (by UID, so a recreated pod of the same name is not
// reported for) cannot be scheduled.
type report struct {
	uid         types.UID
	reason, msg string
}

func newReporter(perSecond float64, burst int) *reporter {
	return &reporter{
		queue:   workqueue.NewTyped[string](),
		limit:   rate.NewLimiter(rate.Limit(perSecond), burst),
		pending: map[string]report{},
	}
}

// add queues rep for the pod key, replacing one not yet written.
func (r *reporter) add(key string, rep report) {
	r.mu.Lock()
	r.pending[key] = rep
	r.mu.Unlock()
	r.queue.Add(key)
}

func (r *reporter) take(key string) (report, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep, ok := r.pending[key]
	delete(r.pending, key)
	return rep, ok
}

// run hands each queued report to write, at most at the reporter's rate,
// until ctx ends.
func (r *reporter) run(ctx context.Context, write func(ctx context.Context, key string, rep report)) {
	go func() {
		<-ctx.Done()
		r.queue.ShutDown()
	}()
	for {
		key, shutdown := r.queue.Get()
		if shutdown {
			return
		}
		rep, ok := r.take(key)
		r.queue.Done(key)
		if !ok {
			continue
		}
		if err := r.limit.Wait(ctx); err != nil {
			return
		}
		write(ctx, key, rep)
	}
}
