package store

import (
	"encoding/binary"
	"fmt"
)

// On-disk layout (bbolt buckets):
//
//	meta:    "format" -> formatMarker
//	         "rev"    -> current revision, 8 bytes big endian
//	         "compact"-> compacted revision (history holds revisions after it)
//	kv:      key -> uvarint createRev, uvarint modRev, value
//	history: revision (8 bytes big endian) -> one event, see encodeEvent
var (
	bucketMeta    = []byte("meta")
	bucketKV      = []byte("kv")
	bucketHistory = []byte("history")

	metaFormat  = []byte("format")
	metaRev     = []byte("rev")
	metaCompact = []byte("compact")

	formatMarker = []byte("orch-store-v1")
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

func encodeKV(createRev, modRev int64, value []byte) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(value))
	b = binary.AppendUvarint(b, uint64(createRev))
	b = binary.AppendUvarint(b, uint64(modRev))
	return append(b, value...)
}

// decodeKV decodes a kv record; the value is copied out of b (which may be
// bbolt's memory map).
func decodeKV(key string, b []byte) (KeyValue, error) {
	c, n := binary.Uvarint(b)
	if n <= 0 {
		return KeyValue{}, fmt.Errorf("key %q: bad create revision: %w", key, ErrCorrupt)
	}
	b = b[n:]
	m, n := binary.Uvarint(b)
	if n <= 0 {
		return KeyValue{}, fmt.Errorf("key %q: bad modify revision: %w", key, ErrCorrupt)
	}
	b = b[n:]
	return KeyValue{Key: key, Value: append([]byte{}, b...), CreateRevision: int64(c), ModRevision: int64(m)}, nil
}

// encodeEvent encodes one history entry (its revision is the bucket key):
// type byte, uvarint key length, key, then for create and update the new
// key's uvarint createRev and length-prefixed value, then a byte saying
// whether Prev follows and, if so, Prev's createRev, modRev and
// length-prefixed value. A delete's KV is rebuilt from Prev.
func encodeEvent(e *Event) []byte {
	size := 1 + 4*binary.MaxVarintLen64 + len(e.KV.Key) + len(e.KV.Value) + 1
	if e.Prev != nil {
		size += 3*binary.MaxVarintLen64 + len(e.Prev.Value)
	}
	b := make([]byte, 0, size)
	b = append(b, byte(e.Type))
	b = binary.AppendUvarint(b, uint64(len(e.KV.Key)))
	b = append(b, e.KV.Key...)
	if e.Type != EventDelete {
		b = binary.AppendUvarint(b, uint64(e.KV.CreateRevision))
		b = binary.AppendUvarint(b, uint64(len(e.KV.Value)))
		b = append(b, e.KV.Value...)
	}
	if e.Prev == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(e.Prev.CreateRevision))
	b = binary.AppendUvarint(b, uint64(e.Prev.ModRevision))
	b = binary.AppendUvarint(b, uint64(len(e.Prev.Value)))
	return append(b, e.Prev.Value...)
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
	v := append([]byte{}, d.b[:n]...)
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

// decodeEvent decodes the history entry of revision rev, copying out of b.
func decodeEvent(rev int64, b []byte) (Event, error) {
	d := decoder{b: b}
	var e Event
	e.Type = EventType(d.byte())
	e.KV.Key = string(d.bytes())
	e.KV.ModRevision = rev
	if e.Type != EventDelete {
		e.KV.CreateRevision = int64(d.uvarint())
		e.KV.Value = d.bytes()
	}
	if d.byte() == 1 {
		p := KeyValue{Key: e.KV.Key}
		p.CreateRevision = int64(d.uvarint())
		p.ModRevision = int64(d.uvarint())
		p.Value = d.bytes()
		e.Prev = &p
	}
	switch {
	case d.err || len(d.b) != 0:
		return Event{}, fmt.Errorf("history entry %d: bad encoding: %w", rev, ErrCorrupt)
	case e.Type < EventCreate || e.Type > EventDelete:
		return Event{}, fmt.Errorf("history entry %d: bad event type %d: %w", rev, e.Type, ErrCorrupt)
	case (e.Type == EventCreate) != (e.Prev == nil):
		return Event{}, fmt.Errorf("history entry %d: %s with prev=%t: %w", rev, e.Type, e.Prev != nil, ErrCorrupt)
	}
	if e.Type == EventDelete {
		e.KV.CreateRevision = e.Prev.CreateRevision
		e.KV.Value = e.Prev.Value
	}
	return e, nil
}

// eventKey returns the key of an encoded history entry without decoding
// the values.
func eventKey(rev int64, b []byte) (string, error) {
	d := decoder{b: b}
	d.byte()
	n := d.uvarint()
	if d.err || n > uint64(len(d.b)) {
		return "", fmt.Errorf("history entry %d: bad encoding: %w", rev, ErrCorrupt)
	}
	return string(d.b[:n]), nil
}
