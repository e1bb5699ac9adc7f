// Package checkpoint keeps the state of a correlator in a JetStream KV
// bucket as incremental checkpoints: every item of the state (a group of a
// rule, a source clock) under its own keys, written only when it changed,
// and a meta record, written last, that says which writes are part of the
// committed state and which stream sequence it covers. See "Correlator
// checkpoints" in docs/ARCHITECTURE.md for the layout and why a crash or a
// fenced writer cannot corrupt it.
//
// Keys, under the scope key K (e.g. "correlator-p0"):
//
//	K                      meta record: covered seq, epoch, gen, valid map,
//	                       the correlator's meta state (inline, or chunks)
//	K.i.<hash>.<0|1>       the two slots of an item (hash of its id)
//	K.x.<hash>.<e>.<g>.<n> chunks of an item too large for one message
//	K.m.<e>.<g>.<n>        chunks of a large meta state
//	K.legacy               a single-value snapshot of klaxon before
//	                       incremental checkpoints, while it is migrated
package checkpoint

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/parallel"
)

// ErrFenced is returned when another correlator took the state over (the
// meta record moved on under this one): the caller must stop without
// writing anything more.
var ErrFenced = errors.New("checkpoint: another correlator took this state over")

// errRaced: the meta record moved between reading it and claiming it.
var errRaced = errors.New("checkpoint: the state changed while it was read")

// Options tune a Store.
type Options struct {
	// ChunkSize bounds the value of one KV message; larger items are split
	// into chunks (default: the server's max payload minus 4 KiB).
	ChunkSize int
	// Window is the number of asynchronous publishes in flight (default 256).
	Window int
	// Logger receives notices (default slog.Default()).
	Logger *slog.Logger
}

// Store reads and writes the checkpoints of one scope (one correlator or
// partition). It is not safe for concurrent use.
type Store struct {
	js jetstream.JetStream // own context: asynchronous publishes
	// legacyJS asks the stream's leader (newestRevision): the jetstream
	// package gets messages of a KV bucket's stream directly from any replica.
	legacyJS nats.JetStreamContext
	kv       jetstream.KeyValue
	stream   jetstream.Stream // the bucket's stream (purges), looked up once
	key      string
	prefix   string // subject prefix of the bucket's keys
	log      *slog.Logger
	chunk    int
	window   int

	loaded  bool
	epoch   uint64            // this writer's epoch (claimed at Load)
	gen     uint64            // last committed generation
	metaRev uint64            // KV revision of the meta record
	valid   map[uint64]uint64 // epoch → last committed generation of it
	legacy  bool              // the committed state is K.legacy
	metaCk  []string          // chunk keys of the committed meta state
	items   map[hkey]*item
	refs    map[uint64]int // current records per epoch (prunes valid)
	live    int            // items whose current record is not a tombstone
	digest  uint64         // XOR of recordDigest over their current records
	owed    []purge        // clean-up not done yet
	// cleanupFailing is set while clean-ups fail (logged once).
	cleanupFailing bool

	// unsure is set when the meta write of the last attempt failed in a way
	// that leaves open whether it was stored (a timeout).
	unsure  bool
	attempt *attempt

	// scanned, in tests, is called after a load's scan.
	scanned func()
	// uncompressed, in tests, writes records as versions before
	// compression did.
	uncompressed bool

	// hook, in tests, is called before each publish ("publish", its
	// number in the attempt) and before the commit ("commit", 0); an error
	// stops the attempt there, as a crash would.
	hook func(stage string, n int) error
}

// hkey is the hash of an item id: its key in the bucket.
type hkey [16]byte

func hashID(id string) hkey {
	s := sha256.Sum256([]byte(id))
	return hkey(s[:16])
}

func (h hkey) String() string { return hex.EncodeToString(h[:]) }

// slot is what the store knows of one slot of an item.
type slot struct {
	rev        uint64 // KV revision of its record (0: empty)
	epoch, gen uint64
	del        bool
	chunks     []string // chunk keys of its record
}

// item is what the store knows of an item's keys.
type item struct {
	cur   int // slot with the committed record, -1 when none
	slots [2]slot
}

// purge is a clean-up: the messages of a subject filter below a sequence
// (0: all of them).
type purge struct {
	filter string
	below  uint64
	done   func()
}

// SaveStats says what one Save wrote.
type SaveStats struct {
	Items, Deleted int // items written, items deleted
	Messages       int // KV messages published (item slots, chunks, meta)
	Bytes          int // what they held (items compressed)
	// Raw is the size of the changed items before compression.
	Raw int
	// Overwrites counts slots written again after their compare-and-set
	// failed (records of an unfinished or fenced attempt).
	Overwrites int
}

// metaRecord is the value of K. Version 0 (no "v") is the single-value
// snapshot of klaxon before incremental checkpoints: {"seq", "state"}.
type metaRecord struct {
	V     int               `json:"v,omitempty"`
	Seq   uint64            `json:"seq"`
	Epoch uint64            `json:"epoch,omitempty"`
	Gen   uint64            `json:"gen,omitempty"`
	Valid map[uint64]uint64 `json:"valid,omitempty"`
	// Live is the number of items (not deleted) the commit leaves: a load
	// that reads fewer read an incomplete state and fails rather than
	// claim it (0: not recorded, records before it).
	Live int `json:"live,omitempty"`
	// Digest is the XOR of recordDigest over the live items' current
	// records (hex; empty: not recorded, records before it): a load whose
	// picked records give another read an older record of some item (a
	// replica's stale view) and fails rather than claim it.
	Digest string `json:"digest,omitempty"`
	// Legacy: the state is the single-value snapshot in K.legacy.
	Legacy bool `json:"legacy,omitempty"`
	// State is the correlator's meta record, inline, or in Chunks chunks
	// of Len bytes with the SHA-256 Sum.
	State  json.RawMessage `json:"state,omitempty"`
	Chunks int             `json:"chunks,omitempty"`
	Len    int             `json:"len,omitempty"`
	Sum    string          `json:"sum,omitempty"`
}

// header starts the value of an item slot; the item follows after a
// newline (or is in chunks).
type header struct {
	ID     string `json:"id"`
	Epoch  uint64 `json:"e"`
	Gen    uint64 `json:"g"`
	Del    bool   `json:"del,omitempty"`
	Chunks int    `json:"n,omitempty"`
	Len    int    `json:"len,omitempty"`
	Sum    string `json:"sum,omitempty"`
	// Z: the payload is zstd-compressed (compress.go); Len and Sum are
	// those of the compressed bytes.
	Z bool `json:"z,omitempty"`
}

// New returns the store of the scope key in the bucket kv.
func New(js jetstream.JetStream, kv jetstream.KeyValue, key string, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Window <= 0 {
		opts.Window = 256
	}
	nc := js.Conn()
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = max(int(nc.MaxPayload())-4096, 1024)
	}
	own, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(opts.Window*2), jetstream.WithPublishAsyncTimeout(15*time.Second))
	if err != nil {
		return nil, err
	}
	var legacyOpts []nats.JSOpt
	if p := js.Options().APIPrefix; p != "" {
		legacyOpts = append(legacyOpts, nats.APIPrefix(p))
	}
	legacyJS, err := nc.JetStream(legacyOpts...)
	if err != nil {
		return nil, err
	}
	return &Store{
		js: own, legacyJS: legacyJS, kv: kv, key: key, prefix: "$KV." + kv.Bucket() + ".",
		log: opts.Logger, chunk: opts.ChunkSize, window: opts.Window,
		items: map[hkey]*item{}, refs: map[uint64]int{}, valid: map[uint64]uint64{},
	}, nil
}

// Close releases the store's publishing context.
func (s *Store) Close() { s.js.CleanupPublisher() }

func (s *Store) slotKey(h hkey, i int) string {
	return s.key + ".i." + h.String() + "." + strconv.Itoa(i)
}
func (s *Store) chunkKey(h hkey, e, g uint64, n int) string {
	return fmt.Sprintf("%s.x.%s.%d.%d.%d", s.key, h, e, g, n)
}
func (s *Store) metaChunkKey(e, g uint64, n int) string {
	return fmt.Sprintf("%s.m.%d.%d.%d", s.key, e, g, n)
}
func (s *Store) legacyKey() string { return s.key + ".legacy" }

// Load reads the committed state into c, claims the scope (a new epoch,
// written to the meta record with compare-and-set: a previous writer that
// is still alive can commit nothing more) and returns the stream sequence
// the state covers. Writes of an unfinished checkpoint, and late writes of
// a fenced writer, are ignored and cleaned up. A single-value snapshot of
// klaxon before incremental checkpoints is migrated: it is restored and
// every item is written with the first Save.
func (s *Store) Load(ctx context.Context, c *correlate.Correlator) (uint64, error) {
	for attempt := 0; ; attempt++ {
		seq, err := s.load(ctx, c, true)
		if err != nil {
			s.loaded = false
		}
		if errors.Is(err, errRaced) {
			if attempt < 5 {
				continue
			}
			return 0, ErrFenced
		}
		return seq, err
	}
}

// Read reads the committed state of the scope key into c without claiming
// it (for tools and tests) and returns the stream sequence it covers.
func Read(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, key string, c *correlate.Correlator) (uint64, error) {
	s, err := New(js, kv, key, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	return s.read(ctx, c)
}

// read is Read with the store made.
func (s *Store) read(ctx context.Context, c *correlate.Correlator) (uint64, error) {
	for attempt := 0; ; attempt++ {
		seq, err := s.load(ctx, c, false)
		if errors.Is(err, errRaced) && attempt < 5 {
			continue // committed to meanwhile: read again
		}
		return seq, err
	}
}

// scanned is what a scan of the scope's keys found.
type scanned struct {
	items  map[hkey]*item
	best   map[hkey]*record // the newest valid record of each item
	chunks map[string]kvValue
	maxRev map[hkey]uint64 // newest revision under an item's keys
	// hasChunks is set for items with chunk keys.
	hasChunks map[hkey]bool
	legacy    []byte
	maxE      uint64
	metaCks   map[string]uint64 // meta chunk keys → revision
}

type kvValue struct {
	b   []byte
	rev uint64
}

type record struct {
	hdr     header
	slot    int
	payload []byte // inline payload (nil when chunked)
}

// readMeta reads the meta record at the store's key: its revision (0:
// none), and old, the single-value snapshot a version 0 record is.
func (s *Store) readMeta(ctx context.Context) (m metaRecord, metaRev uint64, old []byte, err error) {
	e, err := s.kv.Get(ctx, s.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return m, 0, nil, nil
	case err != nil:
		return m, 0, nil, fmt.Errorf("checkpoint: read %s: %w", s.key, err)
	}
	metaRev = e.Revision()
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return m, 0, nil, fmt.Errorf("checkpoint: %s unreadable: %w", s.key, err)
	}
	switch m.V {
	case 0:
		return metaRecord{Seq: m.Seq}, metaRev, e.Value(), nil
	case 2:
		return m, metaRev, nil, nil
	}
	return m, 0, nil, fmt.Errorf("checkpoint: %s: unknown version %d", s.key, m.V)
}

func (s *Store) load(ctx context.Context, c *correlate.Correlator, claim bool) (uint64, error) {
	m, metaRev, old, err := s.readMeta(ctx)
	if err != nil {
		return 0, err
	}
	valid := func(ep, g uint64) bool {
		v, ok := m.Valid[ep]
		return ok && g <= v
	}
	sc, err := s.scan(ctx, valid)
	if err != nil {
		return 0, err
	}
	if s.scanned != nil {
		s.scanned()
	}
	if m.Legacy {
		if sc.legacy == nil {
			return 0, fmt.Errorf("checkpoint: %s says the state is in %s, which is missing", s.key, s.legacyKey())
		}
		old = sc.legacy
	}
	var metaState []byte
	if m.V == 2 && !m.Legacy {
		if metaState, err = s.metaState(&m, sc); err != nil {
			return 0, err
		}
	}
	payloads, refs, digest, err := s.assembleItems(sc)
	if err != nil {
		return 0, err
	}
	if m.V == 2 && len(payloads) < m.Live {
		// A read that ended early (a watch reset while a replica catches
		// up): claiming it would make what it missed invalid for good.
		return 0, fmt.Errorf("checkpoint: read %s: %d items of the %d its last commit left: the read was incomplete", s.key, len(payloads), m.Live)
	}
	if m.V == 2 && !m.Legacy && m.Digest != "" && m.Digest != digestHex(digest) {
		// As many items, but some as an older record: restoring them
		// would skip what they missed for good.
		return 0, fmt.Errorf("checkpoint: read %s: the records read are not those its last commit left (digest %s, want %s): a stale read", s.key, digestHex(digest), m.Digest)
	}
	if !claim {
		// A read that claims nothing is checked another way: the meta
		// record must not have moved while the keys were read (a record a
		// later commit overwrote is gone from the bucket, and the read
		// would mix generations).
		if _, rev, _, err := s.readMeta(ctx); err != nil {
			return 0, err
		} else if rev != metaRev {
			return 0, errRaced
		}
		return s.restore(c, m.Seq, old, metaState, payloads)
	}
	epoch := max(m.Epoch, sc.maxE) + 1
	keep := map[uint64]uint64{epoch: 0}
	for ep := range refs {
		keep[ep] = m.Valid[ep]
	}
	cl := metaRecord{V: 2, Seq: m.Seq, Epoch: epoch, Valid: keep, Legacy: old != nil, Live: len(payloads), Digest: digestHex(digest)}
	if old != nil && !m.Legacy {
		// Keep the single-value snapshot where the claim does not replace it.
		if _, err := s.kv.Put(ctx, s.legacyKey(), old); err != nil {
			return 0, fmt.Errorf("checkpoint: keep the snapshot: %w", err)
		}
	}
	ck, err := s.putMeta(ctx, &cl, metaState, nil)
	if err != nil {
		return 0, err
	}
	b, err := json.Marshal(cl)
	if err != nil {
		return 0, err
	}
	var rev uint64
	if metaRev == 0 {
		rev, err = s.kv.Create(ctx, s.key, b)
	} else {
		rev, err = s.kv.Update(ctx, s.key, b, metaRev)
	}
	if casConflict(err) {
		return 0, errRaced
	}
	if err != nil {
		return 0, fmt.Errorf("checkpoint: claim %s: %w", s.key, err)
	}
	s.loaded, s.epoch, s.gen, s.metaRev, s.valid, s.legacy, s.metaCk = true, epoch, 0, rev, keep, old != nil, ck
	s.items, s.refs, s.owed, s.live, s.digest = sc.items, refs, nil, len(payloads), digest
	s.unsure, s.attempt = false, nil
	s.oweGarbage(sc, ck)
	seq, err := s.restore(c, m.Seq, old, metaState, payloads)
	if err != nil {
		return 0, err
	}
	// The garbage found is purged by Tidy after the first commit: a
	// takeover does not wait for it (thousands of purges after a crash
	// took minutes on a busy R3 cluster, during which the partition had
	// no correlator).
	return seq, nil
}

// assembleItems makes the items' current records of a scan current, and
// returns their payloads by item id and the number of current records per
// epoch; the other records are garbage.
func (s *Store) assembleItems(sc *scanned) (map[string][]byte, map[uint64]int, uint64, error) {
	type stored struct {
		id string
		b  []byte
	}
	var packed []stored
	payloads := make(map[string][]byte, len(sc.best))
	refs := map[uint64]int{}
	var digest uint64
	for h, r := range sc.best {
		it := sc.items[h]
		it.cur = r.slot
		refs[r.hdr.Epoch]++ // a current tombstone too: its epoch stays valid until it is purged
		if r.hdr.Del {
			continue
		}
		digest ^= recordDigest(r.hdr.ID, r.hdr.Epoch, r.hdr.Gen)
		p := r.payload
		if r.hdr.Chunks > 0 {
			var err error
			if p, err = assemble(sc.chunks, r.hdr.Len, r.hdr.Sum, s.itemChunkKeys(h, r.hdr)); err != nil {
				return nil, nil, 0, fmt.Errorf("checkpoint: item %q: %w", r.hdr.ID, err)
			}
		}
		if r.hdr.Z {
			packed = append(packed, stored{r.hdr.ID, p})
			continue
		}
		payloads[r.hdr.ID] = p
	}
	errs := make([]error, len(packed))
	parallel.For(len(packed), func(i int) {
		packed[i].b, errs[i] = decompress(packed[i].b)
	})
	for i, x := range packed {
		if errs[i] != nil {
			return nil, nil, 0, fmt.Errorf("checkpoint: item %q: %w", x.id, errs[i])
		}
		payloads[x.id] = x.b
	}
	return payloads, refs, digest, nil
}

// oweGarbage schedules the clean-up after a claim (bounded by what the
// scan saw: later writes are not touched): items without a current
// record, chunks nothing current refers to, meta chunks of earlier
// records. ck are the chunks of the new meta record.
func (s *Store) oweGarbage(sc *scanned, ck []string) {
	used := map[string]bool{}
	for _, k := range ck {
		used[k] = true
	}
	for h, it := range s.items {
		if it.cur < 0 || it.slots[it.cur].del {
			s.forget(h, it, sc.maxRev[h]+1, sc.hasChunks[h])
			continue
		}
		for _, k := range it.slots[it.cur].chunks {
			used[k] = true
		}
	}
	for k, v := range sc.chunks {
		if !used[k] {
			s.owe(k, v.rev+1, nil)
		}
	}
	for k, rev := range sc.metaCks {
		if !used[k] {
			s.owe(k, rev+1, nil)
		}
	}
}

// restore loads the state into c: the single-value snapshot old, or the
// meta state and the items.
//
// A single-value snapshot that cannot be read is logged and skipped: the
// correlator starts with empty state from the start of the stream (as
// klaxon did before incremental checkpoints).
func (s *Store) restore(c *correlate.Correlator, seq uint64, old, metaState []byte, payloads map[string][]byte) (uint64, error) {
	if old != nil {
		var rec struct {
			State json.RawMessage `json:"state"`
		}
		err := json.Unmarshal(old, &rec)
		if err == nil {
			err = c.Restore(rec.State)
		}
		if err != nil {
			s.log.Error("snapshot unreadable; starting with empty state", "key", s.key, "err", err)
			return 0, nil
		}
		return seq, nil
	}
	if metaState == nil {
		return seq, nil // nothing stored yet
	}
	if err := c.RestoreCheckpoint(metaState, maps.All(payloads)); err != nil {
		return 0, err
	}
	return seq, nil
}

// scan reads every key of the scope once and picks, for each item, the
// newest record that valid accepts.
func (s *Store) scan(ctx context.Context, valid func(epoch, gen uint64) bool) (*scanned, error) {
	sc := &scanned{items: map[hkey]*item{}, best: map[hkey]*record{}, chunks: map[string]kvValue{},
		maxRev: map[hkey]uint64{}, metaCks: map[string]uint64{}, hasChunks: map[hkey]bool{}}
	// The watcher ends its initial values (nil) at the first entry whose
	// pending count is 0, and that count can reach 0 early (a replica
	// that rejoined the cluster; a restore after a NATS node restart read
	// a tenth of the state): the scan goes on until it has seen the
	// newest message under the scope, asked of the stream's leader first.
	newest, err := s.newestRevision(ctx)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: read %s: %w", s.key, err)
	}
	w, err := s.kv.Watch(ctx, s.key+".>") // deletes too: the newest may be one
	if err != nil {
		return nil, fmt.Errorf("checkpoint: read %s: %w", s.key, err)
	}
	defer w.Stop()
	idle := time.NewTimer(opTimeout)
	defer idle.Stop()
	var initDone bool
	var seen uint64
	for !initDone || seen < newest {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("checkpoint: read %s: %w", s.key, ctx.Err())
		case <-idle.C:
			return nil, fmt.Errorf("checkpoint: read %s: nothing received for %s (newest revision seen %d of %d)", s.key, opTimeout, seen, newest)
		case e = <-w.Updates():
		}
		idle.Reset(opTimeout)
		if e == nil {
			initDone = true
			continue
		}
		seen = max(seen, e.Revision())
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		rest := strings.TrimPrefix(e.Key(), s.key+".")
		kind, rest, _ := strings.Cut(rest, ".")
		switch kind {
		case "legacy":
			sc.legacy = e.Value()
		case "m":
			sc.metaCks[e.Key()] = e.Revision()
			sc.chunks[e.Key()] = kvValue{e.Value(), e.Revision()}
			if ep, err := strconv.ParseUint(strings.SplitN(rest, ".", 2)[0], 10, 64); err == nil {
				sc.maxE = max(sc.maxE, ep)
			}
		case "x":
			parts := strings.Split(rest, ".")
			h, ok := parseHash(parts[0])
			if !ok {
				continue
			}
			sc.chunks[e.Key()] = kvValue{e.Value(), e.Revision()}
			sc.maxRev[h] = max(sc.maxRev[h], e.Revision())
			sc.hasChunks[h] = true
			if len(parts) > 1 {
				if ep, err := strconv.ParseUint(parts[1], 10, 64); err == nil {
					sc.maxE = max(sc.maxE, ep)
				}
			}
		case "i":
			hs, si, _ := strings.Cut(rest, ".")
			h, ok := parseHash(hs)
			n, err := strconv.Atoi(si)
			if !ok || err != nil || n < 0 || n > 1 {
				continue
			}
			sc.maxRev[h] = max(sc.maxRev[h], e.Revision())
			it := sc.items[h]
			if it == nil {
				it = &item{cur: -1}
				sc.items[h] = it
			}
			hdr, payload, err := splitRecord(e.Value())
			if err != nil {
				s.log.Warn("checkpoint: unreadable item record ignored", "key", e.Key(), "err", err)
				it.slots[n] = slot{rev: e.Revision()}
				continue
			}
			it.slots[n] = slot{rev: e.Revision(), epoch: hdr.Epoch, gen: hdr.Gen, del: hdr.Del, chunks: s.itemChunkKeys(h, hdr)}
			sc.maxE = max(sc.maxE, hdr.Epoch)
			if !valid(hdr.Epoch, hdr.Gen) {
				continue
			}
			if b := sc.best[h]; b == nil || newer(hdr, b.hdr) {
				if hdr.Chunks > 0 {
					payload = nil
				}
				sc.best[h] = &record{hdr: hdr, slot: n, payload: payload}
			}
		}
	}
	return sc, nil
}

func newer(a, b header) bool {
	if a.Epoch != b.Epoch {
		return a.Epoch > b.Epoch
	}
	return a.Gen > b.Gen
}

// newestRevision is the stream sequence of the newest message under the
// scope's keys (0: none), as the stream's leader has it: not a direct get,
// which any replica answers.
func (s *Store) newestRevision(ctx context.Context) (uint64, error) {
	m, err := s.legacyJS.GetLastMsg("KV_"+s.kv.Bucket(), s.prefix+s.key+".>", nats.Context(ctx))
	if errors.Is(err, nats.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

func parseHash(s string) (hkey, bool) {
	var h hkey
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, false
	}
	copy(h[:], b)
	return h, true
}

// splitRecord splits an item slot's value into its header and payload.
func splitRecord(v []byte) (header, []byte, error) {
	var hdr header
	line, payload, ok := bytes.Cut(v, []byte{'\n'})
	if !ok {
		return hdr, nil, errors.New("no header")
	}
	if err := json.Unmarshal(line, &hdr); err != nil {
		return hdr, nil, err
	}
	return hdr, payload, nil
}

func (s *Store) itemChunkKeys(h hkey, hdr header) []string {
	if hdr.Chunks == 0 {
		return nil
	}
	ks := make([]string, hdr.Chunks)
	for i := range ks {
		ks[i] = s.chunkKey(h, hdr.Epoch, hdr.Gen, i)
	}
	return ks
}

// assemble joins chunks and checks their length and sum.
func assemble(chunks map[string]kvValue, n int, sum string, keys []string) ([]byte, error) {
	out := make([]byte, 0, n)
	for _, k := range keys {
		v, ok := chunks[k]
		if !ok {
			return nil, fmt.Errorf("chunk %s missing", k)
		}
		out = append(out, v.b...)
	}
	if len(out) != n || digest(out) != sum {
		return nil, errors.New("chunks do not add up to the record")
	}
	return out, nil
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:16])
}

// metaState returns the correlator's meta state of m (inline or chunks).
func (s *Store) metaState(m *metaRecord, sc *scanned) ([]byte, error) {
	if m.Chunks == 0 {
		if len(m.State) == 0 {
			return nil, nil // claimed, nothing stored yet
		}
		return m.State, nil
	}
	keys := make([]string, m.Chunks)
	for i := range keys {
		keys[i] = s.metaChunkKey(m.Epoch, m.Gen, i)
	}
	b, err := assemble(sc.chunks, m.Len, m.Sum, keys)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %s: %w", s.key, err)
	}
	return b, nil
}

// putMeta places the meta state in m: inline, or, when it is large, in
// chunks written now (returned).
func (s *Store) putMeta(ctx context.Context, m *metaRecord, state []byte, st *SaveStats) ([]string, error) {
	if len(state)+512 <= s.chunk {
		m.State = state
		return nil, nil
	}
	m.Len, m.Sum = len(state), digest(state)
	var keys []string
	var pubs []pub
	for i := 0; len(state) > 0; i++ {
		n := min(len(state), s.chunk)
		k := s.metaChunkKey(m.Epoch, m.Gen, i)
		keys = append(keys, k)
		pubs = append(pubs, pub{key: k, data: state[:n]})
		state = state[n:]
	}
	m.Chunks = len(keys)
	if err := s.publishAll(ctx, pubs, st); err != nil {
		return nil, fmt.Errorf("checkpoint: meta chunks: %w", err)
	}
	return keys, nil
}

// pub is one message to publish: a chunk (no expectation) or an item slot
// (expect, compare-and-set on the subject's last sequence).
type pub struct {
	key    string
	data   []byte
	expect *uint64
	rev    uint64 // set when stored
	err    error
}

// publishAll publishes asynchronously, at most window in flight, and
// waits for every acknowledgement.
func (s *Store) publishAll(ctx context.Context, pubs []pub, st *SaveStats) error {
	type inflight struct {
		i int
		f jetstream.PubAckFuture
	}
	var q []inflight
	wait := func(x inflight) error {
		select {
		case ack := <-x.f.Ok():
			pubs[x.i].rev = ack.Sequence
		case err := <-x.f.Err():
			pubs[x.i].err = err
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	for i := range pubs {
		p := &pubs[i]
		var opts []jetstream.PublishOpt
		if p.expect != nil {
			opts = append(opts, jetstream.WithExpectLastSequencePerSubject(*p.expect))
		}
		if s.hook != nil {
			if err := s.hook("publish", i); err != nil {
				for _, x := range q {
					_ = wait(x) // what was sent lands, as before a crash
				}
				return err
			}
		}
		if len(q) >= s.window {
			if err := wait(q[0]); err != nil {
				return err
			}
			q = q[1:]
		}
		f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: s.prefix + p.key, Data: p.data}, opts...)
		if err != nil {
			p.err = err
			continue
		}
		if st != nil {
			st.Messages++
			st.Bytes += len(p.data)
		}
		q = append(q, inflight{i, f})
	}
	for _, x := range q {
		if err := wait(x); err != nil {
			return err
		}
	}
	for i := range pubs {
		if pubs[i].err != nil && pubs[i].expect == nil {
			return pubs[i].err
		}
	}
	return nil
}

// attempt is a checkpoint being written: its generation and item writes.
type attempt struct {
	gen    uint64
	seq    uint64
	writes []*write
	metaCk []string
}

// write is the write of one item into one slot.
type write struct {
	h      hkey
	it     *item
	slot   int
	del    bool
	hdr    header
	head   []byte
	chunks []string
	prev   slot // what the slot held before
}

// Save writes what changed in c since its last stored checkpoint, then
// commits it with the meta record covering stream sequence seq. On
// ErrFenced the caller stops; on another error the checkpoint is not
// stored and Save may be called again later (it writes what changed since
// as well). Save is Begin, Write, the correlator's Committed and Tidy in
// one.
func (s *Store) Save(ctx context.Context, c *correlate.Correlator, seq uint64) (SaveStats, error) {
	p, err := s.Begin(ctx, c, seq)
	if err != nil {
		return SaveStats{}, err
	}
	st, err := p.Write(ctx)
	if err == nil {
		c.Committed()
		s.Tidy(ctx, 0)
	}
	return st, err
}

// Pending is a checkpoint cut by Begin and not yet written.
type Pending struct {
	s     *Store
	cut   *correlate.Cut
	a     *attempt
	pubs  []pub
	heads int
	meta  []byte
	st    SaveStats
}

// Seq is the stream sequence the checkpoint covers.
func (p *Pending) Seq() uint64 { return p.a.seq }

// Begin copies what changed in c since its last stored checkpoint, to be
// encoded and written by Write: the part of a save that reads the
// correlator, so it runs on the correlator's goroutine. The correlator may
// go on while Write runs (on any goroutine); once Write succeeded the
// caller calls c.Committed on the correlator's goroutine. Until then no
// other method of the Store may be called.
func (s *Store) Begin(ctx context.Context, c *correlate.Correlator, seq uint64) (*Pending, error) {
	if !s.loaded {
		return nil, errors.New("checkpoint: Save before Load")
	}
	if s.unsure {
		if err := s.resolve(ctx, c); err != nil {
			return nil, err
		}
	}
	cut, err := c.Cut()
	if err != nil {
		return nil, err
	}
	return &Pending{s: s, cut: cut, a: &attempt{gen: s.gen + 1, seq: seq}}, nil
}

// encode encodes the cut and lays out its writes: chunks first, then the
// slots (compare-and-set), in one pipeline.
func (p *Pending) encode() error {
	s, a, st := p.s, p.a, &p.st
	var raw atomic.Int64
	// Each item is compressed as soon as it is encoded (on the encoding
	// goroutines), so that its JSON buffer is reused for the next one.
	cp, err := p.cut.EncodeWith(func(item []byte) []byte {
		raw.Add(int64(len(item)))
		if !s.uncompressed {
			if z, ok := compress(item); ok {
				return z
			}
		}
		return bytes.Clone(item)
	})
	if err != nil {
		return err
	}
	st.Raw = int(raw.Load())
	p.meta = cp.Meta
	for id, b := range cp.Changed {
		p.pubs = s.addWrite(a, p.pubs, id, b, isCompressed(b), false, st)
	}
	for _, id := range cp.Deleted {
		p.pubs = s.addWrite(a, p.pubs, id, nil, false, true, st)
	}
	p.heads = len(p.pubs)
	for _, w := range a.writes {
		exp := w.it.slots[w.slot].rev
		p.pubs = append(p.pubs, pub{key: s.slotKey(w.h, w.slot), data: w.head, expect: &exp})
	}
	return nil
}

// Write encodes and stores the checkpoint Begin cut: the items, then the
// meta record that commits them. On ErrFenced the caller stops; on another
// error nothing is committed and the caller begins again later (the
// correlator's Checkpoint gives these items again, with what changed
// since).
func (p *Pending) Write(ctx context.Context) (SaveStats, error) {
	if err := p.encode(); err != nil {
		return p.st, err
	}
	s, a, pubs, st := p.s, p.a, p.pubs, p.st
	if err := s.publishAll(ctx, pubs, &st); err != nil {
		return st, fmt.Errorf("checkpoint: write items: %w", err)
	}
	var firstErr error
	for i, w := range a.writes {
		p := &pubs[p.heads+i]
		if p.err != nil && wrongLastSeq(p.err) {
			p.err = s.overwrite(ctx, w, &st)
			p.rev = w.it.slots[w.slot].rev
		}
		if errors.Is(p.err, ErrFenced) {
			return st, ErrFenced
		}
		if p.err != nil {
			firstErr = cmp.Or(firstErr, p.err)
			continue
		}
		w.it.slots[w.slot] = slot{rev: p.rev, epoch: s.epoch, gen: a.gen, del: w.del, chunks: w.chunks}
	}
	if firstErr != nil {
		return st, fmt.Errorf("checkpoint: write item: %w", firstErr)
	}
	// Commit.
	if s.hook != nil {
		if err := s.hook("commit", 0); err != nil {
			return st, err
		}
	}
	dl, dd := s.liveDelta(a)
	m := metaRecord{V: 2, Seq: a.seq, Epoch: s.epoch, Gen: a.gen, Valid: maps.Clone(s.valid), Live: s.live + dl, Digest: digestHex(s.digest ^ dd)}
	m.Valid[s.epoch] = a.gen
	ck, err := s.putMeta(ctx, &m, p.meta, &st)
	if err != nil {
		return st, err
	}
	a.metaCk = ck
	b, err := json.Marshal(m)
	if err != nil {
		return st, err
	}
	rev, err := s.kv.Update(ctx, s.key, b, s.metaRev)
	if casConflict(err) {
		// Ours after all (an earlier attempt stored it, unacknowledged)? Else fenced.
		return st, s.conflict(ctx, a)
	}
	if err != nil {
		s.unsure, s.attempt = true, a
		return st, fmt.Errorf("checkpoint: commit: %w", err)
	}
	st.Messages++
	st.Bytes += len(b)
	s.committed(ctx, a, rev)
	return st, nil
}

// addWrite adds to attempt a the write of item id (payload, or a
// tombstone when del) and to pubs the chunks it needs, and returns pubs.
func (s *Store) addWrite(a *attempt, pubs []pub, id string, payload []byte, z, del bool, st *SaveStats) []pub {
	h := hashID(id)
	it := s.items[h]
	if it == nil {
		if del {
			return pubs // never stored
		}
		it = &item{cur: -1}
		s.items[h] = it
	}
	w := &write{h: h, it: it, del: del, hdr: header{ID: id, Epoch: s.epoch, Gen: a.gen, Del: del, Z: z}}
	if it.cur == 0 {
		w.slot = 1 // the other slot: the committed record stays until the commit
	}
	w.prev = it.slots[w.slot]
	hb, err := json.Marshal(w.hdr)
	if err == nil && len(hb)+1+len(payload) > s.chunk {
		w.hdr.Len, w.hdr.Sum = len(payload), digest(payload)
		for n := 0; len(payload) > 0; n++ {
			k := s.chunkKey(h, s.epoch, a.gen, n)
			c := min(len(payload), s.chunk)
			pubs = append(pubs, pub{key: k, data: payload[:c]})
			w.chunks = append(w.chunks, k)
			payload = payload[c:]
		}
		w.hdr.Chunks = len(w.chunks)
		hb, _ = json.Marshal(w.hdr)
	}
	w.head = append(append(hb, '\n'), payload...)
	a.writes = append(a.writes, w)
	if del {
		st.Deleted++
	} else {
		st.Items++
	}
	return pubs
}

// overwrite writes w's slot after a compare-and-set failed: the slot holds
// a record this store did not know of. One of an older epoch (a fenced
// writer's late write) or of this epoch (an attempt whose acknowledgement
// was lost) is superseded; one of a newer epoch means another writer took
// over.
func (s *Store) overwrite(ctx context.Context, w *write, st *SaveStats) error {
	key := s.slotKey(w.h, w.slot)
	for range 3 {
		var rev uint64
		e, err := s.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			rev = e.Revision()
			if hdr, _, err := splitRecord(e.Value()); err == nil && hdr.Epoch > s.epoch {
				return ErrFenced
			}
		}
		ack, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: s.prefix + key, Data: w.head}, jetstream.WithExpectLastSequencePerSubject(rev))
		if err == nil {
			st.Messages++
			st.Bytes += len(w.head)
			st.Overwrites++
			w.it.slots[w.slot].rev = ack.Sequence
			return nil
		}
		if !wrongLastSeq(err) {
			return err
		}
	}
	return fmt.Errorf("checkpoint: %s keeps changing", key)
}

// conflict handles a failed compare-and-set of the meta record.
func (s *Store) conflict(ctx context.Context, a *attempt) error {
	e, err := s.kv.Get(ctx, s.key)
	if err != nil {
		s.unsure, s.attempt = true, a
		return fmt.Errorf("checkpoint: commit: %w", err)
	}
	var m metaRecord
	if json.Unmarshal(e.Value(), &m) == nil && m.V == 2 && m.Epoch == s.epoch && m.Gen == a.gen {
		s.committed(ctx, a, e.Revision())
		return nil
	}
	return ErrFenced
}

// resolve settles an attempt whose commit may or may not have been stored.
func (s *Store) resolve(ctx context.Context, c *correlate.Correlator) error {
	e, err := s.kv.Get(ctx, s.key)
	if err != nil {
		return fmt.Errorf("checkpoint: read %s: %w", s.key, err)
	}
	a := s.attempt
	s.unsure, s.attempt = false, nil
	if e.Revision() == s.metaRev {
		return nil // not stored: the attempt's items are written again
	}
	var m metaRecord
	if json.Unmarshal(e.Value(), &m) == nil && m.V == 2 && m.Epoch == s.epoch && m.Gen == a.gen {
		s.committed(ctx, a, e.Revision())
		c.Committed()
		return nil
	}
	return ErrFenced
}

// committed records a stored commit in the store and cleans up what it
// superseded; the caller tells the correlator (Committed).
func (s *Store) committed(ctx context.Context, a *attempt, rev uint64) {
	dl, dd := s.liveDelta(a)
	s.live += dl
	s.digest ^= dd
	s.gen, s.metaRev = a.gen, rev
	s.valid[s.epoch] = a.gen
	for _, w := range a.writes {
		it := w.it
		if it.cur >= 0 {
			s.refs[it.slots[it.cur].epoch]--
		}
		it.cur = w.slot
		s.refs[s.epoch]++
		cur := it.slots[w.slot]
		// Chunks of what the slot held before (not this generation's).
		if len(w.prev.chunks) > 0 && (w.prev.epoch != s.epoch || w.prev.gen != a.gen) {
			for _, k := range w.prev.chunks {
				s.owe(k, cur.rev, nil)
			}
		}
		if w.del {
			// The tombstone is current until purged.
			s.forget(w.h, it, cur.rev+1, len(it.slots[0].chunks)+len(it.slots[1].chunks) > 0)
		}
	}
	for _, k := range s.metaCk {
		s.owe(k, rev, nil)
	}
	s.metaCk = a.metaCk
	if s.legacy {
		s.owe(s.legacyKey(), rev, nil)
		s.legacy = false
	}
	s.pruneValid()
}

// pruneValid forgets the epochs no current record belongs to any more.
func (s *Store) pruneValid() {
	for ep := range s.valid {
		if ep != s.epoch && s.refs[ep] <= 0 {
			delete(s.valid, ep)
			delete(s.refs, ep)
		}
	}
}

// Tidy removes superseded records a commit or a takeover left (old chunks,
// purged tombstones, earlier meta chunks), starting removals for at most
// budget (0: up to maxCleanup of them) and waiting for those started; the
// rest waits for the next call. It is kept apart from Write so that a
// commit is acknowledged without waiting for it: on a busy R3 cluster the
// thousands of purges a takeover finds took minutes, and the events the
// commit covered stayed unacked all that time. Like every method, it is
// not called while a Pending is being written.
func (s *Store) Tidy(ctx context.Context, budget time.Duration) {
	var deadline time.Time
	if budget > 0 {
		deadline = time.Now().Add(budget)
	}
	s.cleanup(ctx, deadline)
	s.pruneValid()
}

// liveDelta is how the number of live items changes when a commits (read
// before its writes become current).
// liveDelta is what committing a changes in the number of live items and
// in their digest (called before the commit changes the slots).
func (s *Store) liveDelta(a *attempt) (int, uint64) {
	n, d := 0, uint64(0)
	for _, w := range a.writes {
		if it := w.it; it.cur >= 0 && !it.slots[it.cur].del {
			cur := it.slots[it.cur]
			n--
			d ^= recordDigest(w.hdr.ID, cur.epoch, cur.gen)
		}
		if !w.del {
			n++
			d ^= recordDigest(w.hdr.ID, s.epoch, a.gen)
		}
	}
	return n, d
}

// recordDigest stands for one record of an item in the meta record's
// digest.
func recordDigest(id string, epoch, gen uint64) uint64 {
	h := fnv.New64a()
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], epoch)
	binary.BigEndian.PutUint64(b[8:], gen)
	h.Write([]byte(id))
	h.Write(b[:])
	return h.Sum64()
}

// digestHex is how the meta record holds a digest.
func digestHex(d uint64) string { return strconv.FormatUint(d, 16) }

// forget purges the records of item h below revision bound; once done,
// the item is forgotten unless it was written again meanwhile.
func (s *Store) forget(h hkey, it *item, bound uint64, chunks bool) {
	if chunks {
		s.owe(s.key+".x."+h.String()+".>", bound, nil)
	}
	s.owe(s.key+".i."+h.String()+".>", bound, func() {
		if s.items[h] != it {
			return
		}
		for i := range it.slots {
			if it.slots[i].rev == 0 || it.slots[i].rev >= bound {
				continue
			}
			if i == it.cur {
				s.refs[it.slots[i].epoch]--
				it.cur = -1
			}
			it.slots[i] = slot{}
		}
		if it.slots[0].rev == 0 && it.slots[1].rev == 0 {
			delete(s.items, h)
		}
	})
}

func (s *Store) owe(filter string, below uint64, done func()) {
	s.owed = append(s.owed, purge{filter: filter, below: below, done: done})
}

// cleanup runs the clean-ups owed, a few at a time; those that fail stay
// owed (tried again after the next commit).
func (s *Store) cleanup(ctx context.Context, deadline time.Time) {
	if len(s.owed) == 0 {
		return
	}
	if s.stream == nil {
		st, err := s.js.Stream(ctx, "KV_"+s.kv.Bucket())
		if err != nil {
			s.log.Debug("checkpoint: clean-up postponed", "err", err)
			return
		}
		s.stream = st
	}
	owed := s.owed
	s.owed = nil
	if len(owed) > maxCleanup {
		// The rest after the next commit: a commit's latency stays bounded.
		s.owed = append(s.owed, owed[maxCleanup:]...)
		owed = owed[:maxCleanup]
	}
	failed := make([]bool, len(owed))
	var firstErr error
	var errMu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	started := len(owed)
	for i, p := range owed {
		sem <- struct{}{}
		if !deadline.IsZero() && time.Now().After(deadline) {
			<-sem
			started = i
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(s.prefix + p.filter)}
			if p.below > 0 {
				opts = append(opts, jetstream.WithPurgeSequence(p.below))
			}
			if err := s.stream.Purge(ctx, opts...); err != nil {
				failed[i] = true
				errMu.Lock()
				firstErr = cmp.Or(firstErr, err)
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.owed = append(s.owed, owed[started:]...) // not started: the budget was spent
	owed = owed[:started]
	n := 0
	for i, p := range owed {
		if failed[i] {
			s.owed = append(s.owed, p)
			n++
			continue
		}
		if p.done != nil {
			p.done()
		}
	}
	switch {
	case n > 0 && !s.cleanupFailing:
		s.cleanupFailing = true
		s.log.Warn("checkpoint clean-up failed; the bucket keeps superseded records until it works (retried after each checkpoint; logged once)",
			"key", s.key, "failed", n, "err", firstErr)
	case n == 0 && s.cleanupFailing:
		s.cleanupFailing = false
		s.log.Info("checkpoint clean-up works again", "key", s.key)
	}
}

// maxCleanup bounds the clean-ups run after one commit.
const maxCleanup = 4096

// opTimeout bounds the wait for the next key of a scan. Requests carry
// the JetStream context's default timeout when ctx has no deadline.
const opTimeout = 10 * time.Second

// casConflict reports a failed compare-and-set on a KV entry.
func casConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || wrongLastSeq(err)
}

// wrongLastSeq reports a publish refused for its expected last sequence.
func wrongLastSeq(err error) bool {
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}
