package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// loadValue returns a copy of the value written at rev.
func loadValue(tx *bolt.Tx, rev int64) ([]byte, error) {
	v := tx.Bucket(bucketValues).Get(revKey(rev))
	if v == nil {
		return nil, fmt.Errorf("value of revision %d missing: %w", rev, ErrCorrupt)
	}
	return append(make([]byte, 0, len(v)), v...), nil
}

// readKV decodes the kv record b of key and loads its value.
func readKV(tx *bolt.Tx, key string, b []byte) (KeyValue, error) {
	kv, err := decodeKV(key, b)
	if err != nil {
		return kv, err
	}
	if kv.Value, err = loadValue(tx, kv.ModRevision); err != nil {
		return kv, fmt.Errorf("key %q: %w", key, err)
	}
	return kv, nil
}

// readEvent decodes the history entry b of revision rev and loads its
// values (the new one, and Prev's).
func readEvent(tx *bolt.Tx, rev int64, b []byte) (Event, error) {
	e, err := decodeEvent(rev, b)
	if err != nil {
		return e, err
	}
	if e.Prev != nil {
		if e.Prev.Value, err = loadValue(tx, e.Prev.ModRevision); err != nil {
			return e, fmt.Errorf("history entry %d, previous value: %w", rev, err)
		}
	}
	if e.Type == EventDelete {
		e.KV.Value = e.Prev.Value
		return e, nil
	}
	if e.KV.Value, err = loadValue(tx, rev); err != nil {
		return e, fmt.Errorf("history entry %d: %w", rev, err)
	}
	return e, nil
}
