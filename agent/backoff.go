package agent

import "time"

// backoff is a container's restart (or image pull) back-off: the first
// retry is immediate, then base, doubling up to max; a container that ran
// for reset or longer starts over.
type backoff struct {
	base, max, reset time.Duration
}

// next returns the delay to apply after this one.
func (b backoff) next(cur time.Duration) time.Duration {
	if cur == 0 {
		return b.base
	}
	return min(cur*2, b.max)
}
