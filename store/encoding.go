package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// On-disk layout (bbolt buckets). Each value is stored once, under the
// revision that wrote it; keys and history entries refer to values by
// revision (as etcd's MVCC does), so a write stores its value once rather
// than in the key, in its history entry and again as the next entry's Prev.
//
//	meta:    "format" -> formatMarker
//	         "rev"    -> current revision, 8 bytes big endian
//	         "compact"-> compacted revision (history holds revisions after it)
//	         "wal"    -> epoch of the write-ahead log (see wal.go): its
//	                     records belong to this file only if they carry it
//	kv:      key -> uvarint createRev, uvarint modRev (value: values[modRev])
//	history: revision -> one event without values, see encodeEvent
//	values:  revision -> the value written at that revision
//
// values holds exactly the values of the current keys and the Prev values
// of the retained history entries: trimming a history entry deletes the
// value it replaced.
var (
	bucketMeta    = []byte("meta")
	bucketKV      = []byte("kv")
	bucketHistory = []byte("history")
	bucketValues  = []byte("values")

	metaFormat   = []byte("format")
	metaRev      = []byte("rev")
	metaCompact  = []byte("compact")
	metaWALEpoch = []byte("wal")

	formatMarker = []byte("orch-store-v2")
)

func revKey(rev int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(rev))
	return b[:]
}

func decodeRevKey(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("revision key of %d bytes: %w", len(b), ErrCorrupt)
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

func encodeKV(createRev, modRev int64) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, uint64(createRev))
	return binary.AppendUvarint(b, uint64(modRev))
}

// decodeKV decodes a kv record into a KeyValue without its value.
func decodeKV(key string, b []byte) (KeyValue, error) {
	d := decoder{b: b}
	c := d.uvarint()
	m := d.uvarint()
	if d.err || len(d.b) != 0 || c == 0 || c > m {
		return KeyValue{}, fmt.Errorf("key %q: bad record: %w", key, ErrCorrupt)
	}
	return KeyValue{Key: key, CreateRevision: int64(c), ModRevision: int64(m)}, nil
}

// encodeEvent encodes one history entry (its revision is the bucket key)
// without values: type byte, uvarint key length, key, for create and update
// the uvarint createRev, then a byte saying whether Prev follows and, if so,
// Prev's uvarint createRev and modRev.
func encodeEvent(e *Event) []byte {
	b := make([]byte, 0, 2+4*binary.MaxVarintLen64+len(e.KV.Key))
	b = append(b, byte(e.Type))
	b = binary.AppendUvarint(b, uint64(len(e.KV.Key)))
	b = append(b, e.KV.Key...)
	if e.Type != EventDelete {
		b = binary.AppendUvarint(b, uint64(e.KV.CreateRevision))
	}
	if e.Prev == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(e.Prev.CreateRevision))
	return binary.AppendUvarint(b, uint64(e.Prev.ModRevision))
}

type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err || n > uint64(len(d.b)) {
		d.err = true
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.err = true
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// decodeEvent decodes the history entry of revision rev, without values
// (KV.Value and Prev.Value are nil; see DB.readEvent).
func decodeEvent(rev int64, b []byte) (Event, error) {
	d := decoder{b: b}
	var e Event
	e.Type = EventType(d.byte())
	e.KV.Key = string(d.bytes())
	e.KV.ModRevision = rev
	if e.Type != EventDelete {
		e.KV.CreateRevision = int64(d.uvarint())
	}
	if d.byte() == 1 {
		p := KeyValue{Key: e.KV.Key}
		p.CreateRevision = int64(d.uvarint())
		p.ModRevision = int64(d.uvarint())
		e.Prev = &p
	}
	switch {
	case d.err || len(d.b) != 0:
		return Event{}, fmt.Errorf("history entry %d: bad encoding: %w", rev, ErrCorrupt)
	case e.Type < EventCreate || e.Type > EventDelete:
		return Event{}, fmt.Errorf("history entry %d: bad event type %d: %w", rev, e.Type, ErrCorrupt)
	case (e.Type == EventCreate) != (e.Prev == nil):
		return Event{}, fmt.Errorf("history entry %d: %s with prev=%t: %w", rev, e.Type, e.Prev != nil, ErrCorrupt)
	case e.Type != EventDelete && (e.KV.CreateRevision < 1 || e.KV.CreateRevision > rev):
		return Event{}, fmt.Errorf("history entry %d: create revision %d: %w", rev, e.KV.CreateRevision, ErrCorrupt)
	case e.Prev != nil && (e.Prev.ModRevision >= rev || e.Prev.CreateRevision < 1 || e.Prev.CreateRevision > e.Prev.ModRevision):
		return Event{}, fmt.Errorf("history entry %d: prev revisions %d/%d: %w", rev, e.Prev.CreateRevision, e.Prev.ModRevision, ErrCorrupt)
	}
	if e.Type == EventDelete {
		e.KV.CreateRevision = e.Prev.CreateRevision
	}
	return e, nil
}

// eventKey returns the key of an encoded history entry without decoding
// the rest.
func eventKey(rev int64, b []byte) (string, error) {
	d := decoder{b: b}
	d.byte()
	k := d.bytes()
	if d.err {
		return "", fmt.Errorf("history entry %d: bad encoding: %w", rev, ErrCorrupt)
	}
	return string(k), nil
}

// metaRevisions reads the current and the compacted revision from the meta
// bucket.
func metaRevisions(meta *bolt.Bucket) (rev, compact int64, err error) {
	if rev, err = decodeRevKey(meta.Get(metaRev)); err != nil {
		return 0, 0, fmt.Errorf("current revision: %w", err)
	}
	if compact, err = decodeRevKey(meta.Get(metaCompact)); err != nil {
		return 0, 0, fmt.Errorf("compacted revision: %w", err)
	}
	return rev, compact, nil
}
