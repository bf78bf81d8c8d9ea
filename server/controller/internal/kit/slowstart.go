package kit

import (
	"errors"
	"sync"
)

// SlowStart calls fn count times in batches that start at initial and
// double while every call of a batch succeeds, so a doomed operation (quota,
// validation) fails once rather than count times. It returns how many calls
// succeeded and the errors of the failing batch.
func SlowStart(count, initial int, fn func() error) (int, error) {
	done := 0
	for batch := min(count, initial); batch > 0; batch = min(2*batch, count-done) {
		var mu sync.Mutex
		var errs []error
		var wg sync.WaitGroup
		for i := 0; i < batch; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fn(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		done += batch - len(errs)
		if len(errs) > 0 {
			return done, errors.Join(errs...)
		}
	}
	return done, nil
}
