// Package events makes the client-go event broadcasters of orch's
// components (scheduler, controllers, agent).
package events

import "k8s.io/client-go/tools/record"

// CorrelatorCache is how many recent events a broadcaster's correlator
// remembers for aggregation and spam filtering. client-go's default, 4096,
// keeps some 7 MB after a burst of distinct events (thousands of
// unschedulable pods each getting FailedScheduling); repeats of the same
// event within the last few hundred are still aggregated and rate limited.
const CorrelatorCache = 256

// NewBroadcaster is record.NewBroadcaster with the smaller correlator cache.
func NewBroadcaster() record.EventBroadcaster {
	return record.NewBroadcaster(record.WithCorrelatorOptions(record.CorrelatorOptions{LRUCacheSize: CorrelatorCache}))
}
