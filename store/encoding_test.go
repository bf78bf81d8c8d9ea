package store

import (
	"errors"
	"testing"
)

func TestEventRoundTrip(t *testing.T) {
	prev := &KeyValue{Key: "/k", CreateRevision: 3, ModRevision: 5}
	cases := []Event{
		{Type: EventCreate, KV: KeyValue{Key: "/k", CreateRevision: 7, ModRevision: 7}},
		{Type: EventUpdate, KV: KeyValue{Key: "/k", CreateRevision: 3, ModRevision: 7}, Prev: prev},
		{Type: EventDelete, KV: KeyValue{Key: "/k", CreateRevision: 3, ModRevision: 7}, Prev: prev},
	}
	for _, e := range cases {
		got, err := decodeEvent(7, encodeEvent(&e))
		if err != nil {
			t.Fatalf("%v: %v", e.Type, err)
		}
		if got.Type != e.Type || !sameKVs([]KeyValue{got.KV}, []KeyValue{e.KV}) ||
			(e.Prev != nil) != (got.Prev != nil) || (e.Prev != nil && !sameKVs([]KeyValue{*got.Prev}, []KeyValue{*e.Prev})) {
			t.Fatalf("round trip of %+v gave %+v", e, got)
		}
		if k, err := eventKey(7, encodeEvent(&e)); err != nil || k != "/k" {
			t.Fatalf("eventKey: %q %v", k, err)
		}
	}
	kv, err := decodeKV("/k", encodeKV(3, 9))
	if err != nil || kv.CreateRevision != 3 || kv.ModRevision != 9 {
		t.Fatalf("kv round trip: %+v %v", kv, err)
	}
}

func TestDecodeBad(t *testing.T) {
	for _, b := range [][]byte{nil, {1}, {9, 2, '/', 'k', 0}, {2, 2, '/', 'k', 1, 1, 0, 0}, {1, 200, '/'}, {2, 2, '/', 'k', 1, 1, 1, 9}} {
		if _, err := decodeEvent(1, b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decodeEvent(%v): %v", b, err)
		}
	}
	for _, b := range [][]byte{nil, {5, 3}, {1, 2, 3}} {
		if _, err := decodeKV("/k", b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decodeKV(%v): %v", b, err)
		}
	}
	if _, err := decodeRevKey([]byte{1, 2}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("decodeRevKey: %v", err)
	}
}

// FuzzDecodeEvent: any bytes decode to an event or an ErrCorrupt error,
// never a panic, and valid events re-encode to the same bytes.
func FuzzDecodeEvent(f *testing.F) {
	prev := &KeyValue{Key: "/k", CreateRevision: 3, ModRevision: 5}
	f.Add(encodeEvent(&Event{Type: EventCreate, KV: KeyValue{Key: "/k", CreateRevision: 7}}))
	f.Add(encodeEvent(&Event{Type: EventUpdate, KV: KeyValue{Key: "/k", CreateRevision: 3}, Prev: prev}))
	f.Add(encodeEvent(&Event{Type: EventDelete, KV: KeyValue{Key: "/k"}, Prev: prev}))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEvent(7, b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error without ErrCorrupt: %v", err)
			}
			return
		}
		if again, err := decodeEvent(7, encodeEvent(&e)); err != nil || again.Type != e.Type || again.KV.Key != e.KV.Key {
			t.Fatalf("re-encode: %+v %v", again, err)
		}
	})
}
