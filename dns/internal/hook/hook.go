// Package hook hands live Go objects from orch's DNS server to the CoreDNS
// plugins that a Corefile instantiates.
//
// CoreDNS builds plugins by calling a setup function registered once per
// process (caddy's plugin registry is global), with nothing but the Corefile
// tokens as input. An orch plugin therefore names its server in the Corefile
// (`orch <id> ...`) and looks the id up here. This table is the one piece of
// package-level mutable state in dns/: it is forced by caddy's design, holds
// only entries that a running dns.Server registered under a unique id, and
// each entry is removed when that server stops.
package hook

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
)

var (
	mu    sync.Mutex
	table = map[string]any{}
)

// Register stores v under a fresh unique id and returns the id and a function
// that removes the entry.
func Register(v any) (id string, unregister func()) {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	id = "h" + hex.EncodeToString(b[:])
	mu.Lock()
	table[id] = v
	mu.Unlock()
	return id, func() {
		mu.Lock()
		delete(table, id)
		mu.Unlock()
	}
}

// Lookup returns the value registered under id as a T.
func Lookup[T any](id string) (T, error) {
	mu.Lock()
	v, ok := table[id]
	mu.Unlock()
	var zero T
	if !ok {
		return zero, fmt.Errorf("no running orch DNS server with id %q", id)
	}
	t, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("orch DNS hook %q holds %T, not %T", id, v, zero)
	}
	return t, nil
}
