package scheduler

import (
	"context"
	"sync"
	"time"

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
//
// The reports are background work: while the API server is busy with its
// clients' writes (busy says so), they go at busyLimit's far lower rate and
// leave the CPU to the requests clients wait for; they are delayed, never
// dropped.
type reporter struct {
	queue     workqueue.TypedInterface[string]
	limit     *rate.Limiter
	busyLimit *rate.Limiter
	busy      func() bool

	mu      sync.Mutex
	pending map[string]report
}

// report is why one pod (by UID, so a recreated pod of the same name is not
// reported for) cannot be scheduled.
type report struct {
	uid         types.UID
	reason, msg string
}

// newReporter writes at most perSecond reports a second in bursts of
// burst, and busyPerSecond (bursts of 1) while busy, if not nil, says the
// API server is busy.
func newReporter(perSecond float64, burst int, busyPerSecond float64, busy func() bool) *reporter {
	return &reporter{
		queue:     workqueue.NewTyped[string](),
		limit:     rate.NewLimiter(rate.Limit(perSecond), burst),
		busyLimit: rate.NewLimiter(rate.Limit(busyPerSecond), 1),
		busy:      busy,
		pending:   map[string]report{},
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
		if err := r.wait(ctx); err != nil {
			return
		}
		write(ctx, key, rep)
	}
}

// wait returns when the next report may be written: a token of the normal
// rate, and while the API server is busy one of the busy rate as well (the
// server is asked again every 100 ms, so a burst that ends releases the
// queue at the normal rate).
func (r *reporter) wait(ctx context.Context) error {
	if err := r.limit.Wait(ctx); err != nil {
		return err
	}
	for r.busy != nil && r.busy() && !r.busyLimit.Allow() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
