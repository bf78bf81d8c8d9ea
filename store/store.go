// Package store is orch's cluster database, in place of etcd: a versioned
// key-value store with one global revision counter, compare-and-swap writes,
// consistent paged lists and ordered watches that can resume from a recent
// revision.
//
// Keys look like /registry/<group>/<resource>/<namespace>/<name>; values are
// opaque bytes. Every write takes the next revision; a key keeps the revision
// that created it and the one that last modified it, and the API server uses
// the latter as resourceVersion.
//
// A write is durable once its group's record is in the write-ahead log
// beside the bbolt file (<Path>.wal); the log is folded into the bbolt file
// in checkpoints, so an idle cluster's lease renewals cost a page each.
//
// Interface is deliberately small so that an etcd backend
// (go.etcd.io/etcd/client/v3) can implement it one to one.
package store

import (
	"context"
	"errors"
)

// Sentinel errors. Callers test them with errors.Is; implementations wrap them
// with context (the key, the revisions involved).
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("store: key not found")
	// ErrExists: Create found the key already present.
	ErrExists = errors.New("store: key already exists")
	// ErrConflict: the expected modify revision of an Update or Delete does
	// not match the key's current one.
	ErrConflict = errors.New("store: revision conflict")
	// ErrCompacted: the requested revision is older than the retained history
	// (or a watcher fell behind it); the caller must list afresh (the API
	// server answers 410 Gone).
	ErrCompacted = errors.New("store: revision compacted")
	// ErrFutureRevision: the requested revision is newer than the store's.
	ErrFutureRevision = errors.New("store: revision not yet reached")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrInUse: another process holds the database.
	ErrInUse = errors.New("store: database in use by another process")
	// ErrCorrupt: the database file failed its checks at open.
	ErrCorrupt = errors.New("store: database corrupt")
)

// KeyValue is one stored key at one revision.
type KeyValue struct {
	Key            string
	Value          []byte
	CreateRevision int64
	ModRevision    int64
}

// EventType says what happened to a key.
type EventType int

const (
	// EventCreate: the key was created (CreateRevision == ModRevision).
	EventCreate EventType = iota + 1
	// EventUpdate: an existing key got a new value.
	EventUpdate
	// EventDelete: the key was removed.
	EventDelete
)

func (t EventType) String() string {
	switch t {
	case EventCreate:
		return "CREATE"
	case EventUpdate:
		return "UPDATE"
	case EventDelete:
		return "DELETE"
	}
	return "UNKNOWN"
}

// Event is one change, delivered to watchers in revision order.
type Event struct {
	Type EventType
	// KV is the key after the change. For a delete, KV.Value is the value the
	// key had before it was removed, and KV.ModRevision is the revision of
	// the delete.
	KV KeyValue
	// Prev is the key before the change (nil for a create).
	Prev *KeyValue
}

// Revision is the revision of the change.
func (e Event) Revision() int64 { return e.KV.ModRevision }

// ListOptions control List.
type ListOptions struct {
	// Limit caps the number of keys returned; 0 means no limit.
	Limit int64
	// Continue is the key to resume after, as returned in ListResult.Continue
	// by an earlier page.
	Continue string
	// Revision lists the prefix as it stood at that revision; 0 means now.
	// Paging with the revision of the first page gives a consistent list.
	Revision int64
	// Known, when set, is asked about each key listed in its current state
	// with that state's revision. A key it knows (true) comes back without
	// its Value, which the caller has already: the list does not copy it
	// out of the file.
	Known func(key string, modRevision int64) bool
}

// ListResult is one page of a List.
type ListResult struct {
	KVs []KeyValue
	// Revision is the revision the list was served at.
	Revision int64
	// Continue is non-empty when more keys remain; pass it back with the same
	// Revision to get the next page.
	Continue string
	// Remaining is how many keys after this page match, when known (-1 if not).
	Remaining int64
}

// Watcher delivers the changes under a prefix.
type Watcher interface {
	// Events delivers changes in revision order. It is closed when the
	// watch ends: on Stop, on context cancellation, when the store closes,
	// or when the watcher fell too far behind; Err then says why.
	Events() <-chan Event
	// Err is the reason the watch ended (nil after Stop or cancellation).
	Err() error
	// Stop ends the watch and releases its resources. Safe to call twice.
	Stop()
}

// Store is the cluster database.
type Store interface {
	// Create writes a new key and returns its revision; ErrExists if present.
	Create(ctx context.Context, key string, value []byte) (int64, error)
	// Get returns the current value of key; ErrNotFound if absent.
	Get(ctx context.Context, key string) (KeyValue, error)
	// List returns keys under prefix in key order.
	List(ctx context.Context, prefix string, opts ListOptions) (ListResult, error)
	// Update replaces key's value if its ModRevision equals expectedRev
	// (ErrConflict otherwise; ErrNotFound if absent) and returns the new
	// revision. expectedRev 0 skips the check.
	Update(ctx context.Context, key string, value []byte, expectedRev int64) (int64, error)
	// Delete removes key if its ModRevision equals expectedRev (0 skips the
	// check) and returns what it held, with ModRevision set to the delete's
	// revision.
	Delete(ctx context.Context, key string, expectedRev int64) (KeyValue, error)
	// Watch delivers every change under prefix with a revision greater than
	// fromRevision (0: from now on). ErrCompacted if fromRevision is older
	// than the retained history, ErrFutureRevision if it is newer than the
	// current revision. A watcher that falls behind the retained history
	// ends with an error wrapping ErrCompacted.
	Watch(ctx context.Context, prefix string, fromRevision int64) (Watcher, error)
	// Compact drops history at and before rev.
	Compact(ctx context.Context, rev int64) error
	// Revision is the store's current revision.
	Revision() int64
	// Close releases the database.
	Close() error
}
