package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/moorage/moorage/internal/store"
)

// Bucket and meta key names. They are never modified.
var (
	bucketKV      = []byte("kv")
	bucketLog     = []byte("log")
	bucketMeta    = []byte("meta")
	metaRev       = []byte("rev")
	metaCompacted = []byte("compacted")
	metaVersion   = []byte("version")
)

// formatVersion is the version of the file layout described in the package doc.
const formatVersion = 1

// errCorrupt marks a record that does not decode.
var errCorrupt = errors.New("embedded: corrupt record")

// revKey encodes a revision as a log key: big-endian, so that bbolt's byte
// order is revision order.
func revKey(rev int64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(rev))
}

// parseRevKey decodes a log key.
func parseRevKey(k []byte) (int64, error) {
	if len(k) != 8 {
		return 0, fmt.Errorf("%w: log key of %d bytes", errCorrupt, len(k))
	}
	return int64(binary.BigEndian.Uint64(k)), nil
}

// kvView is a kv record decoded in place: key and value alias bbolt memory
// and are valid only inside the transaction that read them.
type kvView struct {
	key            []byte
	value          []byte
	createRevision int64
	modRevision    int64
}

// toKV copies the view out of bbolt memory.
func (v *kvView) toKV() store.KeyValue {
	return store.KeyValue{
		Key:            string(v.key),
		Value:          append([]byte{}, v.value...),
		CreateRevision: v.createRevision,
		ModRevision:    v.modRevision,
	}
}

// encodeKV encodes a kv record: uvarint createRev | uvarint modRev | value.
func encodeKV(createRev, modRev int64, value []byte) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(value))
	b = binary.AppendUvarint(b, uint64(createRev))
	b = binary.AppendUvarint(b, uint64(modRev))
	return append(b, value...)
}

// decodeKV decodes a kv record in place.
func decodeKV(key, b []byte) (kvView, error) {
	d := decoder{b: b}
	v := kvView{key: key, createRevision: d.rev(), modRevision: d.rev(), value: d.rest()}
	if d.err != nil || v.createRevision < 1 || v.modRevision < v.createRevision {
		return kvView{}, fmt.Errorf("%w: value of key %q", errCorrupt, key)
	}
	return v, nil
}

// logRecord is a log entry decoded in place (slices alias bbolt memory).
type logRecord struct {
	typ            store.EventType
	key            []byte
	value          []byte // after the write; the last value for a delete
	createRevision int64
	prevModRev     int64  // 0 for a create
	prevValue      []byte // nil for a create
}

// encodeEvent encodes a log entry:
//
//	type (1 byte) | uvarint createRev | uvarint prevModRev |
//	uvarint len(key) | key | uvarint len(value) | value | prevValue
//
// where prevValue (the rest) is present for updates only: a create has
// none, and a delete's previous value is its value.
func encodeEvent(ev store.Event) []byte {
	var prevMod int64
	var prevValue []byte
	if ev.PrevKV != nil {
		prevMod = ev.PrevKV.ModRevision
		if ev.Type == store.Updated {
			prevValue = ev.PrevKV.Value
		}
	}
	n := 1 + 4*binary.MaxVarintLen64 + len(ev.KV.Key) + len(ev.KV.Value) + len(prevValue)
	b := append(make([]byte, 0, n), byte(ev.Type))
	b = binary.AppendUvarint(b, uint64(ev.KV.CreateRevision))
	b = binary.AppendUvarint(b, uint64(prevMod))
	b = binary.AppendUvarint(b, uint64(len(ev.KV.Key)))
	b = append(b, ev.KV.Key...)
	b = binary.AppendUvarint(b, uint64(len(ev.KV.Value)))
	b = append(b, ev.KV.Value...)
	return append(b, prevValue...)
}

// decodeLog decodes the log entry of revision rev in place.
func decodeLog(rev int64, b []byte) (logRecord, error) {
	d := decoder{b: b}
	r := logRecord{typ: store.EventType(d.byte())}
	r.createRevision = d.rev()
	r.prevModRev = d.rev()
	r.key = d.bytes()
	r.value = d.bytes()
	rest := d.rest()
	ok := d.err == nil && len(r.key) > 0
	switch r.typ {
	case store.Created:
		ok = ok && r.createRevision == rev && r.prevModRev == 0 && len(rest) == 0
	case store.Updated:
		r.prevValue = rest
		ok = ok && r.createRevision <= r.prevModRev && r.prevModRev < rev
	case store.Deleted:
		r.prevValue = r.value
		ok = ok && r.createRevision <= r.prevModRev && r.prevModRev < rev && len(rest) == 0
	default:
		ok = false
	}
	if !ok || r.createRevision < 1 {
		return logRecord{}, fmt.Errorf("%w: log entry %d", errCorrupt, rev)
	}
	return r, nil
}

// prev returns the key's state before the write, nil for a create.
func (r *logRecord) prev() *kvView {
	if r.typ == store.Created {
		return nil
	}
	return &kvView{key: r.key, value: r.prevValue, createRevision: r.createRevision, modRevision: r.prevModRev}
}

// event copies the record out of bbolt memory as the event of revision rev.
func (r *logRecord) event(rev int64) store.Event {
	after := kvView{key: r.key, value: r.value, createRevision: r.createRevision, modRevision: rev}
	ev := store.Event{Type: r.typ, KV: after.toKV()}
	if p := r.prev(); p != nil {
		kv := p.toKV()
		ev.PrevKV = &kv
	}
	return ev
}

// encodeRev encodes a meta revision.
func encodeRev(rev int64) []byte { return revKey(rev) }

// decodeRev decodes a meta revision; a missing one is 0.
func decodeRev(name, b []byte) (int64, error) {
	if b == nil {
		return 0, nil
	}
	rev, err := parseRevKey(b)
	if err != nil || rev < 0 {
		return 0, fmt.Errorf("%w: meta %q", errCorrupt, name)
	}
	return rev, nil
}

// decoder reads a record's fields, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) rev() int64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > 1<<62 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return int64(v)
}

func (d *decoder) bytes() []byte {
	n := d.rev()
	if d.err != nil || n > int64(len(d.b)) {
		d.fail()
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) rest() []byte {
	b := d.b
	d.b = nil
	return b
}
