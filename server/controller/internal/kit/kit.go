// Package kit holds the plumbing every orch controller shares: the
// rate-limited work loop, expectations, event recording and pod helpers.
package kit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Queue is the typed rate-limited work queue of object keys.
type Queue = workqueue.TypedRateLimitingInterface[string]

// NewQueue makes a named queue with the upstream controller rate limiter
// (per-item exponential back-off from 5ms to 1000s and an overall bucket).
func NewQueue(name string) Queue {
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedMaxOfRateLimiter(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, 2*time.Minute),
			&workqueue.TypedBucketRateLimiter[string]{Limiter: newLimiter()},
		),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: name},
	)
}

// Key is the namespace/name key of an informer object, including tombstones.
func Key(obj any) (string, bool) {
	k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	return k, err == nil
}

// Tombstone unwraps a DeletedFinalStateUnknown.
func Tombstone(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

// Sync handles one key; it must be idempotent.
type Sync func(ctx context.Context, key string) error

// RunWorkers processes q with sync on workers goroutines until ctx ends;
// it shuts q down and waits for the workers before returning. Failed keys
// are retried with back-off; NotFound and Conflict errors are retried too
// (the informer catches up) but logged at debug level only.
func RunWorkers(ctx context.Context, q Queue, workers int, fn Sync, log *slog.Logger) {
	if workers < 1 {
		workers = 1
	}
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for processNext(ctx, q, fn, log) {
			}
		}()
	}
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
}

func processNext(ctx context.Context, q Queue, fn Sync, log *slog.Logger) bool {
	key, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(key)
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("sync %s: panic: %v", key, r)
				utilruntime.HandleError(err)
			}
		}()
		return fn(ctx, key)
	}()
	if err == nil {
		q.Forget(key)
		return true
	}
	if ctx.Err() != nil {
		return true
	}
	var re *RequeueAfter
	if errors.As(err, &re) {
		q.Forget(key)
		q.AddAfter(key, re.Delay)
		return true
	}
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) || apierrors.IsAlreadyExists(err) {
		log.Debug("sync retry", "key", key, "err", err)
	} else {
		log.Warn("sync failed", "key", key, "retries", q.NumRequeues(key), "err", err)
	}
	q.AddRateLimited(key)
	return true
}

// RequeueAfter asks the work loop to look at a key again after Delay
// without counting a failure.
type RequeueAfter struct{ Delay time.Duration }

func (r *RequeueAfter) Error() string { return fmt.Sprintf("requeue after %s", r.Delay) }

// WaitForSync waits for the informers' caches or fails when ctx ends first.
func WaitForSync(ctx context.Context, name string, synced ...cache.InformerSynced) error {
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("%s: caches did not sync: %w", name, context.Cause(ctx))
	}
	return nil
}

// Run is the whole Run of a queue-driven controller: it starts events
// (when not nil), waits for the caches (shutting q down if they never
// sync), then processes q with fn on workers goroutines until ctx ends.
func Run(ctx context.Context, name string, q Queue, synced []cache.InformerSynced, events *Events, workers int, fn Sync, log *slog.Logger) error {
	if events != nil {
		go events.Run(ctx)
	}
	if err := WaitForSync(ctx, name, synced...); err != nil {
		q.ShutDown()
		return err
	}
	log.Info("started", "workers", workers)
	RunWorkers(ctx, q, workers, fn, log)
	return nil
}
