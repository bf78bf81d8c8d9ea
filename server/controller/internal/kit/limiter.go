package kit

import "golang.org/x/time/rate"

// newLimiter is the overall queue limiter: 10 qps with a burst of 100, as
// upstream controllers use.
func newLimiter() *rate.Limiter { return rate.NewLimiter(rate.Limit(10), 100) }
