package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// The write-ahead log (<Path>.wal) makes a write durable with one small
// append and one fdatasync instead of a bbolt transaction (which rewrites a
// leaf and its branch pages in each of four buckets, the root page, the
// freelist and a meta page, with two syncs). Its records are folded into
// the bbolt file by a checkpoint: when enough has gathered, when a reader
// needs the bbolt file to be current (lists, history), after
// Config.CheckpointInterval, and at Close. An idle node renewing its lease
// every 10 s thus writes one page per renewal instead of a dozen.
//
// The log is a sequence of records from offset 0:
//
//	uint32 LE  payload length
//	uint32 LE  CRC-32C of the payload
//	payload:   byte walVersion
//	           uint64 BE epoch: the bbolt file's revision when the log was
//	                    started (after the last checkpoint)
//	           uvarint compacted revision after this record
//	           uvarint number of events, then per event:
//	                    byte type, uvarint key length, key, uvarint revision,
//	                    and for a create or an update uvarint value length
//	                    and value
//
// A checkpoint commits the records to bbolt (its revision becomes the last
// record's) and then starts the log again at offset 0 with the new epoch,
// overwriting the old records in place (the file keeps its size, so an
// append changes no file metadata). Replay at Open reads records while they
// are whole, carry the epoch equal to the bbolt file's revision, and
// continue its revisions without a gap: a torn last record (a write that
// was never acknowledged) and the stale records of an earlier epoch after
// the current tail end it.
const walVersion = 1

// walHeader is the length and checksum before each payload.
const walHeader = 8

// maxWALRecord bounds a record's payload as read back: MaxBatch writes of
// the API server's largest objects fit many times over; a larger length is
// damage.
const maxWALRecord = 1 << 30

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// wal is the open log file. Only the committer uses it.
type wal struct {
	f     *os.File
	path  string
	off   int64 // where the next record goes
	epoch int64
	buf   []byte
}

// openWAL opens (creating) the log of the store at path.
func openWAL(path string) (*wal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open write-ahead log: %w", err)
	}
	return &wal{f: f, path: path}, nil
}

// walRecord is one decoded record.
type walRecord struct {
	epoch   int64
	compact int64
	events  []Event // without Prev
}

// replay reads the records of epoch, starting at offset 0, that continue
// revision rev without a gap.
func (w *wal) replay(epoch, rev int64) ([]walRecord, error) {
	info, err := w.f.Stat()
	if err != nil {
		return nil, fmt.Errorf("write-ahead log %s: %w", w.path, err)
	}
	size := info.Size()
	var recs []walRecord
	var off int64
	var hdr [walHeader]byte
	for off+walHeader <= size {
		if _, err := w.f.ReadAt(hdr[:], off); err != nil {
			return nil, fmt.Errorf("write-ahead log %s at %d: %w", w.path, off, err)
		}
		n := int64(binary.LittleEndian.Uint32(hdr[:4]))
		if n == 0 || n > maxWALRecord || off+walHeader+n > size {
			break
		}
		payload := make([]byte, n)
		if _, err := w.f.ReadAt(payload, off+walHeader); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("write-ahead log %s at %d: %w", w.path, off, err)
		}
		if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(hdr[4:]) {
			break
		}
		r, err := decodeWALRecord(payload)
		if err != nil || r.epoch != epoch {
			break
		}
		if len(r.events) > 0 && r.events[0].KV.ModRevision != rev+1 {
			break
		}
		rev += int64(len(r.events))
		recs = append(recs, r)
		off += walHeader + n
	}
	return recs, nil
}

// reset starts the log again at offset 0 for epoch. Nothing is written:
// the next append overwrites the old records, and replay stops at the first
// record of another epoch.
func (w *wal) reset(epoch int64) {
	w.off = 0
	w.epoch = epoch
}

// append writes one record of events (revisions already assigned) with the
// compacted revision after it, and syncs the file's data. On error the
// tail stays where it was: the next append overwrites whatever part of the
// record reached the file.
func (w *wal) append(compact int64, events []Event) error {
	b := w.buf[:0]
	b = append(b, make([]byte, walHeader)...)
	b = append(b, walVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(w.epoch))
	b = binary.AppendUvarint(b, uint64(compact))
	b = binary.AppendUvarint(b, uint64(len(events)))
	for i := range events {
		e := &events[i]
		b = append(b, byte(e.Type))
		b = binary.AppendUvarint(b, uint64(len(e.KV.Key)))
		b = append(b, e.KV.Key...)
		b = binary.AppendUvarint(b, uint64(e.KV.ModRevision))
		if e.Type != EventDelete {
			b = binary.AppendUvarint(b, uint64(len(e.KV.Value)))
			b = append(b, e.KV.Value...)
		}
	}
	payload := b[walHeader:]
	binary.LittleEndian.PutUint32(b[:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:8], crc32.Checksum(payload, crcTable))
	if cap(b) <= 1<<20 {
		w.buf = b // keep a buffer of ordinary size for the next record
	}
	if _, err := w.f.WriteAt(b, w.off); err != nil {
		return fmt.Errorf("write-ahead log %s: write at %d: %w", w.path, w.off, err)
	}
	if err := fdatasync(w.f); err != nil {
		return fmt.Errorf("write-ahead log %s: sync: %w", w.path, err)
	}
	w.off += int64(len(b))
	return nil
}

func (w *wal) close() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close write-ahead log %s: %w", w.path, err)
	}
	return nil
}

// fdatasync flushes f's data (and only the metadata needed to read it).
func fdatasync(f *os.File) error {
	for {
		if err := unix.Fdatasync(int(f.Fd())); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// decodeWALRecord decodes a payload whose checksum matched.
func decodeWALRecord(p []byte) (walRecord, error) {
	var r walRecord
	if len(p) < 9 || p[0] != walVersion {
		return r, fmt.Errorf("write-ahead log record: unknown version: %w", ErrCorrupt)
	}
	r.epoch = int64(binary.BigEndian.Uint64(p[1:9]))
	d := decoder{b: p[9:]}
	r.compact = int64(d.uvarint())
	n := d.uvarint()
	if d.err || n > uint64(len(d.b)) {
		return r, fmt.Errorf("write-ahead log record: bad header: %w", ErrCorrupt)
	}
	r.events = make([]Event, 0, n)
	for range n {
		var e Event
		e.Type = EventType(d.byte())
		e.KV.Key = string(d.bytes())
		e.KV.ModRevision = int64(d.uvarint())
		if e.Type != EventDelete {
			e.KV.Value = append([]byte{}, d.bytes()...)
		}
		if d.err || e.Type < EventCreate || e.Type > EventDelete || e.KV.Key == "" {
			return r, fmt.Errorf("write-ahead log record: bad event: %w", ErrCorrupt)
		}
		if len(r.events) > 0 && e.KV.ModRevision != r.events[len(r.events)-1].KV.ModRevision+1 {
			return r, fmt.Errorf("write-ahead log record: revision %d out of sequence: %w", e.KV.ModRevision, ErrCorrupt)
		}
		r.events = append(r.events, e)
	}
	if len(d.b) != 0 {
		return r, fmt.Errorf("write-ahead log record: %d trailing bytes: %w", len(d.b), ErrCorrupt)
	}
	return r, nil
}

// recoverWAL opens the log beside the bbolt file bdb (whose state st was
// read at open), folds the records it still holds into the file, and
// returns the log ready for appends and the number of writes replayed. A
// record that does not apply (a write to a key in the wrong state) is
// damage: Open fails with ErrCorrupt and changes nothing.
func recoverWAL(cfg Config, bdb *bolt.DB, st *state) (*wal, int, error) {
	w, err := openWAL(cfg.Path + ".wal")
	if err != nil {
		return nil, 0, fmt.Errorf("store: %w", err)
	}
	if st.fresh {
		// A log left beside a new file belongs to another database (whose
		// epoch this file's random one does not match anyway): empty it.
		if err := w.f.Truncate(0); err != nil {
			_ = w.close()
			return nil, 0, fmt.Errorf("store: empty write-ahead log %s: %w", w.path, err)
		}
		w.reset(st.walEpoch)
		return w, 0, nil
	}
	recs, err := w.replay(st.walEpoch, st.rev)
	if err != nil {
		_ = w.close()
		return nil, 0, fmt.Errorf("store: %w", err)
	}
	if len(recs) == 0 {
		w.reset(st.walEpoch)
		return w, 0, nil
	}
	var events []Event
	compact := st.compact
	for _, r := range recs {
		events = append(events, r.events...)
		compact = max(compact, r.compact)
	}
	epoch := st.walEpoch + 1
	err = bdb.Update(func(tx *bolt.Tx) error { return writeEvents(tx, events, compact, epoch) })
	if err != nil {
		_ = w.close()
		return nil, 0, fmt.Errorf("store: replay write-ahead log %s into %s: %w", w.path, cfg.Path, err)
	}
	if n := len(events); n > 0 {
		st.rev = events[n-1].KV.ModRevision
	}
	st.compact = min(compact, st.rev)
	st.walEpoch = epoch
	w.reset(epoch)
	return w, len(events), nil
}
