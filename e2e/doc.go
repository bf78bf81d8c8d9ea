// Package e2e holds the end-to-end acceptance test: the deck's sample
// application (examples/deck) on a three-node orch cluster built from the
// real binary in the multi-host lab (internal/lab), driven with kubectl and
// plain HTTP from a client host outside the cluster. `make e2e` runs it;
// without ORCH_E2E_BIN it skips.
package e2e
