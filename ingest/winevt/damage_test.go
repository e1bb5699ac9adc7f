package winevt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/winevt/evtxwriter"
)

func TestPlausibleIDs(t *testing.T) {
	const huge = 11457157452030545680
	sane := slot{first: 100, last: 104, order: 100}
	cases := []struct {
		name    string
		s       slot
		ids     []uint64
		ceiling uint64
		want    string // per record: + plausible, - not
	}{
		{"intact", sane, []uint64{100, 101, 102, 103, 104}, 5000, "+++++"},
		{"huge in the middle", sane, []uint64{100, 101, huge, 103, 104}, 5000, "++-++"},
		{"huge first", sane, []uint64{huge, 101, 102, 103, 104}, 5000, "-++++"},
		{"huge last", sane, []uint64{100, 101, 102, 103, huge}, 5000, "++++-"},
		{"low bit flipped", sane, []uint64{100, 101, 103, 103, 104}, 5000, "++-++"},
		{"number of a later record", sane, []uint64{100, 104, 102, 103, 104}, 5000, "+-+++"},
		{"two neighbours damaged alike", sane, []uint64{100, huge, huge + 1, 103, 104}, 5000, "+--++"},
		{"two neighbours damaged alike, no ceiling", sane, []uint64{100, huge, huge + 1, 103, 104}, ^uint64(0), "+++++"},
		// A carved chunk whose header is older than its records (as in
		// 2-vss_0-...RemoteConnectionManager: header 352106..352210,
		// records from 462726 on).
		{"stale header", slot{first: 100, last: 200, order: 100}, []uint64{100, 101, 300, 301, 302}, 5000, "+++++"},
		{"stale header, beyond the ceiling", slot{first: 100, last: 200, order: 100}, []uint64{100, 101, 300, 301, 302}, 250, "++---"},
		{"damaged header range", slot{first: 100, last: huge, order: 100}, []uint64{100, 101, 102}, 5000, "+++"},
		{"damaged header, lone record", slot{first: huge, last: 3}, []uint64{7}, 5000, "-"},
		{"header agrees, lone record", slot{first: 7, last: 7, order: 7}, []uint64{7}, 5000, "+"},
		{"gaps within the header range", slot{first: 100, last: 110, order: 100}, []uint64{100, 105, 110}, 5000, "+++"},
		{"swapped numbers", slot{first: 100, last: 102, order: 100}, []uint64{100, 102, 101}, 5000, "+--"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			heads := make([]recHead, len(tc.ids))
			for i, id := range tc.ids {
				heads[i] = recHead{off: chunkHeaderSize + 100*i, size: 100, id: id}
			}
			var got strings.Builder
			for _, ok := range plausibleIDs(tc.s, heads, tc.ceiling) {
				got.WriteString(map[bool]string{true: "+", false: "-"}[ok])
			}
			if got.String() != tc.want {
				t.Errorf("got %s, want %s", got.String(), tc.want)
			}
		})
	}
}

func TestCeiling(t *testing.T) {
	const huge = 11457157452030545680
	slots := []slot{{first: 1, last: 100, order: 1}, {first: 101, last: 200, order: 101}, {first: 201, last: huge, order: 201}, {first: 50, last: 60, order: 77}}
	if got := ceiling(slots); got != 200+maxChunkRecords {
		t.Errorf("ceiling %d, want %d (trusted headers only)", got, 200+maxChunkRecords)
	}
	if got := ceiling(slots[2:]); got != ^uint64(0) {
		t.Errorf("ceiling %d without a trusted header, want none", got)
	}
}

// at is minute m after seedTime.
func at(m int) time.Time { return seedTime.Add(time.Duration(m) * time.Minute) }

func TestCheckTimes(t *testing.T) {
	now := seedTime.Add(30 * 24 * time.Hour)
	y28046 := time.Date(28046, 5, 1, 0, 0, 0, 0, time.UTC)
	later := seedTime.Add(10 * 24 * time.Hour) // days after the others, before now
	type tr struct{ t, hdr time.Time }
	same := func(ms ...int) []tr {
		var out []tr
		for _, m := range ms {
			out = append(out, tr{at(m), at(m)})
		}
		return out
	}
	with := func(base []tr, i int, r tr) []tr {
		out := append([]tr(nil), base...)
		out[i] = r
		return out
	}
	base := same(0, 1, 2, 3, 4, 5, 6)
	cases := []struct {
		name string
		recs []tr
		want []time.Time // times after the check; nil: unchanged
		bad  int64
	}{
		{"intact", base, nil, 0},
		{"year 28046, header intact", with(base, 3, tr{y28046, at(3)}), []time.Time{at(0), at(1), at(2), at(3), at(4), at(5), at(6)}, 1},
		{"before 1990", with(base, 3, tr{time.Date(1601, 1, 2, 0, 0, 0, 0, time.UTC), at(3)}), []time.Time{at(0), at(1), at(2), at(3), at(4), at(5), at(6)}, 1},
		{"future, header future too", with(base, 3, tr{now.Add(48 * time.Hour), now.Add(48 * time.Hour)}), []time.Time{at(0), at(1), at(2), at(2), at(4), at(5), at(6)}, 1},
		{"first record, header zero", with(base, 0, tr{y28046, time.Time{}}), []time.Time{at(1), at(1), at(2), at(3), at(4), at(5), at(6)}, 1},
		{"lone spike, header intact", with(base, 3, tr{later, at(3)}), []time.Time{at(0), at(1), at(2), at(3), at(4), at(5), at(6)}, 1},
		{"lone spike, header far too", with(base, 3, tr{later, later}), nil, 0},
		{"clock step", append(same(0, 1, 2), tr{later, later.Add(-time.Hour * 240)}, tr{later, later}, tr{later, later}), nil, 0},
		// A resume from sleep as in omerbenamram-evtx_system.evtx records
		// 372-376: old, new, old (flushed late), new, new.
		{"resume from sleep", []tr{{at(0), at(0)}, {at(1), at(1)}, {later, later}, {at(2), at(2)}, {later, later}, {later, later}}, nil, 0},
		{"spike at the end of a chunk", with(base, 6, tr{later, at(6)}), nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			recs := make([]rec, len(tc.recs))
			for i, r := range tc.recs {
				recs[i] = rec{id: uint64(i + 1), ev: ingest.Event{Time: r.t, Fields: map[string]any{}}, hasTime: true, hdrTime: r.hdr}
			}
			var st Stats
			checkTimes(recs, now, &st)
			want := tc.want
			if want == nil {
				for _, r := range tc.recs {
					want = append(want, r.t)
				}
			}
			for i, r := range recs {
				if !r.ev.Time.Equal(want[i]) {
					t.Errorf("record %d: time %v, want %v", i, r.ev.Time, want[i])
				}
				_, marked := r.ev.Fields["damaged_time"]
				if changed := !tc.recs[i].t.Equal(r.ev.Time); changed != marked || changed != r.badTime {
					t.Errorf("record %d: changed %v, damaged_time %v, badTime %v", i, changed, marked, r.badTime)
				}
			}
			if st.BadTimes != tc.bad {
				t.Errorf("BadTimes %d, want %d", st.BadTimes, tc.bad)
			}
		})
	}
}

// fileTimeOf encodes t as a FILETIME, also beyond the year 2262.
func fileTimeOf(t time.Time) uint64 {
	return uint64(t.Unix()+11644473600)*10_000_000 + uint64(t.Nanosecond()/100)
}

// setRecordTime overwrites the TimeCreated value of the record at file
// offset off (and its header time when hdr) of an evtxwriter file.
func setRecordTime(t *testing.T, b []byte, off int, tc time.Time, hdr bool) {
	t.Helper()
	size := int(le.Uint32(b[off+4:]))
	orig := b[off+16 : off+24]
	i := bytes.Index(b[off+recordHeader:off+size], orig)
	if i < 0 {
		t.Fatalf("no TimeCreated in the record at 0x%x", off)
	}
	le.PutUint64(b[off+recordHeader+i:], fileTimeOf(tc))
	if hdr {
		le.PutUint64(b[off+16:], fileTimeOf(tc))
	}
}

// TestReadEVTXImpossibleTimes: records whose times were damaged (year
// 28046, before 1990, in the future, a lone spike) are kept with a sound
// time, every event marshals to JSON, and no later record becomes late.
func TestReadEVTXImpossibleTimes(t *testing.T) {
	now := seedTime.Add(30 * 24 * time.Hour)
	w := evtxwriter.New()
	for i := 1; i <= 20; i++ {
		r := srvRecord(i)
		r.Time = at(i)
		w.MustAdd(r)
	}
	b := w.Bytes()
	recs := fileRecords(b)
	setRecordTime(t, b, recs[0], time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), true) // no good header time: the next record's
	setRecordTime(t, b, recs[4], time.Date(28046, 5, 1, 0, 0, 0, 0, time.UTC), false)
	setRecordTime(t, b, recs[9], time.Date(1985, 1, 1, 0, 0, 0, 0, time.UTC), false)
	setRecordTime(t, b, recs[14], now.Add(72*time.Hour), true) // no good header time: the previous record's
	setRecordTime(t, b, recs[17], at(18).Add(9*24*time.Hour), false)
	path := filepath.Join(t.TempDir(), "times.evtx")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var evs []ingest.Event
	st, err := ReadEVTXFile(context.Background(), path, DecoderConfig{Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }},
		func(e ingest.Event) { evs = append(evs, e) })
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]time.Time{0: at(2), 4: at(5), 9: at(10), 14: at(14), 17: at(18)}
	if len(evs) != 20 || st.BadTimes != int64(len(want)) || st.BadRecords != 0 {
		t.Errorf("%d events, %d bad times, %d bad records; want 20, %d, 0", len(evs), st.BadTimes, st.BadRecords, len(want))
	}
	for i, e := range evs {
		w, damaged := want[i]
		if !damaged {
			w = at(i + 1)
		}
		if !e.Time.Equal(w) {
			t.Errorf("record %d: time %v, want %v", i+1, e.Time, w)
		}
		if _, ok := e.Fields["damaged_time"]; ok != damaged {
			t.Errorf("record %d: damaged_time %v, want %v", i+1, e.Fields["damaged_time"], damaged)
		}
		if i > 0 && e.Time.Before(evs[i-1].Time) {
			t.Errorf("record %d is late: %v after %v", i+1, e.Time, evs[i-1].Time)
		}
		if _, err := json.Marshal(e); err != nil {
			t.Errorf("record %d: %v", i+1, err)
		}
	}
	if got := evs[4].Fields["damaged_time"]; got != "28046-05-01T00:00:00.0000000Z" {
		t.Errorf("damaged_time %v", got)
	}
}

// parserDamagedSeeds writes the seed records with the type of the first
// template's first ValueText (the xmlns attribute) changed from string to
// another type: golang-evtx then logs "PANIC - Bad type …" with a stack.
func parserDamagedSeeds(t testing.TB) string {
	t.Helper()
	w := evtxwriter.New()
	w.MustAdd(seedRecords()...)
	b := w.Bytes()
	c := b[fileHeaderSize:]
	def := int(le.Uint32(c[chunkHeaderSize+recordHeader+4+6:])) // template instance after the fragment header
	i := bytes.Index(c[def+24:], []byte{0x05, 0x01})            // ValueText token, StringType
	if i < 0 {
		t.Fatal("no ValueText in the first template")
	}
	c[def+24+i+1] = 0x02
	p := filepath.Join(t.TempDir(), "parser.evtx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGolangEvtxOutputCaptured: what golang-evtx prints for a record it
// cannot parse ("PANIC - Bad type…" and a goroutine stack, through the
// standard logger) becomes one structured warning for the record, counted,
// and nothing of it reaches the standard logger's output; other users of
// the standard logger are unaffected.
func TestGolangEvtxOutputCaptured(t *testing.T) {
	var std bytes.Buffer
	prev, prevFlags := log.Writer(), log.Flags()
	log.SetOutput(&std)
	t.Cleanup(func() { log.SetOutput(prev); log.SetFlags(prevFlags) })
	path := parserDamagedSeeds(t)

	var logs logBuffer
	var n int
	st, err := ReadEVTXFile(context.Background(), path, DecoderConfig{Log: logs.logger()}, func(ingest.Event) { n++ })
	if err != nil {
		t.Fatal(err)
	}
	if st.ParserWarnings != 1 || st.BadRecords == 0 {
		t.Errorf("%d parser warnings, %d bad records; want 1 and some", st.ParserWarnings, st.BadRecords)
	}
	warns := strings.Count(logs.String(), "golang-evtx could not parse a record")
	if warns != 1 || !strings.Contains(logs.String(), `message="PANIC - Bad type, must be (0x01) StringType: parsing *evtx.ValueText"`) ||
		!strings.Contains(logs.String(), "record=101 record_offset=0x200") {
		t.Errorf("%d warnings:\n%s", warns, logs.String())
	}
	if strings.Contains(logs.String(), "goroutine") || strings.Contains(logs.String(), "runtime/debug") {
		t.Errorf("a stack in the log:\n%s", logs.String())
	}
	if std.Len() != 0 {
		t.Errorf("golang-evtx wrote to the standard logger:\n%s", std.String())
	}
	log.Print("someone else's line")
	if !strings.Contains(std.String(), "someone else's line") {
		t.Errorf("the standard logger's other lines are lost: %q", std.String())
	}

	// In parallel, each read gets its own record's message.
	std.Reset()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			st, err := ReadEVTXFile(context.Background(), path, DecoderConfig{Log: slog.New(slog.DiscardHandler)}, func(ingest.Event) {})
			if err != nil || st.ParserWarnings != 1 {
				t.Errorf("parallel read: %d parser warnings, %v", st.ParserWarnings, err)
			}
		})
	}
	wg.Wait()
	if std.Len() != 0 {
		t.Errorf("golang-evtx wrote to the standard logger:\n%s", std.String())
	}
}

// TestLibHook: the hook keeps golang-utils/log lines only during a call,
// whatever the standard logger's flags, and passes the rest on.
func TestLibHook(t *testing.T) {
	var next bytes.Buffer
	h := &libHook{next: &next}
	lines := []struct {
		in   string
		lib  bool
		want string
	}{
		{"2026/01/01 10:00:00 PANIC - Bad type, must be (0x01) StringType: parsing *evtx.ValueText\nruntime/debug.Stack()\n\tgoroutine 7\n", true, "PANIC - Bad type, must be (0x01) StringType: parsing *evtx.ValueText"},
		{"2026/01/01 10:00:00.123456 log.go:82: ERROR - Size: 4 ValType: 0x11 Unk: 0x00 : EOF\n", true, "ERROR - Size: 4 ValType: 0x11 Unk: 0x00 : EOF"},
		{"INFO - Monitoring stopped\n", true, "INFO - Monitoring stopped"},
		{"2026/01/01 10:00:00 http: TLS handshake error from 10.0.0.1\n", false, ""},
		{"a line that says ERROR - somewhere after its first line\n\nERROR - x", false, ""},
	}
	for _, l := range lines {
		var got []string
		libCur.Store(&libCapture{msgs: &got})
		_, _ = h.Write([]byte(l.in))
		libCur.Store(nil)
		if l.lib && (len(got) != 1 || got[0] != l.want) {
			t.Errorf("%q: kept %q, want %q", l.in, got, l.want)
		}
		if !l.lib && len(got) != 0 {
			t.Errorf("%q: kept %q", l.in, got)
		}
	}
	if !strings.Contains(next.String(), "TLS handshake") || strings.Contains(next.String(), "PANIC") {
		t.Errorf("passed on %q", next.String())
	}
	next.Reset()
	_, _ = h.Write([]byte("2026/01/01 10:00:00 PANIC - outside a call\n"))
	if next.Len() == 0 {
		t.Error("a golang-evtx line outside a call was not passed on")
	}
}

// halfWritten returns the bytes of w's file with the record at index i
// (counted over the file) half written: zeroed entirely (tail: the header
// already counts it) or only its body (body: it cannot be decoded).
func halfWritten(t *testing.T, w *evtxwriter.Writer, i int, body bool) []byte {
	t.Helper()
	b := w.Bytes()
	off := fileRecords(b)[i]
	size := int(le.Uint32(b[off+4:]))
	from := off
	if body {
		from = off + recordHeader
	}
	clear(b[from : off+size-4])
	return b
}

// writeAt writes b to path with a distinct modification time.
func writeAt(t *testing.T, path string, b []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// TestSourceRetriesOnlyTheGrowingEnd: a record at the end of the newest
// chunk that cannot be read yet is read again at the next polls (it may be
// half written) and sent once complete, or counted as damaged after
// maxRecordAttempts reads; the same damage anywhere else is damage at once.
func TestSourceRetriesOnlyTheGrowingEnd(t *testing.T) {
	for _, body := range []bool{false, true} {
		t.Run(fmt.Sprintf("body_only=%v", body), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "System.evtx")
			var logs logBuffer
			s, err := New(Config{Paths: []string{path}, ReadFrom: ingest.ReadFromBeginning}, logs.logger())
			if err != nil {
				t.Fatal(err)
			}
			out := make(chan ingest.Event, 1000)
			ctx := context.Background()
			mt := time.Unix(1_700_000_000, 0)
			read := func(wf *wfile) {
				t.Helper()
				mt = mt.Add(time.Second)
				if err := s.read(ctx, wf, out); err != nil {
					t.Fatal(err)
				}
			}
			got := func() []string {
				var ids []string
				for len(out) > 0 {
					e := <-out
					ids = append(ids, e.Field("event_record_id"))
				}
				return ids
			}

			w := evtxwriter.New()
			for i := 1; i <= 6; i++ {
				w.MustAdd(srvRecord(i))
			}
			writeAt(t, path, halfWritten(t, w, 5, body), mt)
			wf, err := s.start(path, false)
			if err != nil {
				t.Fatal(err)
			}
			read(wf)
			sameIDs(t, got(), seq(1, 5))
			if !wf.retry || s.Stats().BadRecords != 0 {
				t.Fatalf("half-written end: retry %v, %d bad records", wf.retry, s.Stats().BadRecords)
			}
			read(wf) // unchanged, read again
			writeAt(t, path, w.Bytes(), mt)
			read(wf)
			sameIDs(t, got(), seq(6, 6))
			if wf.retry || s.Stats().BadRecords != 0 || s.reads.Load() != 3 {
				t.Fatalf("completed: retry %v, %d bad records, %d reads", wf.retry, s.Stats().BadRecords, s.reads.Load())
			}

			// Never completed: given up after maxRecordAttempts reads.
			w.MustAdd(srvRecord(7))
			writeAt(t, path, halfWritten(t, w, 6, body), mt)
			for range maxRecordAttempts + 2 {
				read(wf)
			}
			if len(got()) != 0 || wf.retry || s.Stats().BadRecords != 1 || s.reads.Load() != 3+maxRecordAttempts {
				t.Fatalf("never completed: retry %v, %d bad records, %d reads", wf.retry, s.Stats().BadRecords, s.reads.Load())
			}
			// The file grows: what follows is sent, the damage is not counted again.
			w.MustAdd(srvRecord(8))
			b := halfWritten(t, w, 6, body)
			if !body {
				// The walk stops at a bad record boundary: a new chunk.
				w.NewChunk()
				w.MustAdd(srvRecord(9))
				b = halfWritten(t, w, 6, body)
			}
			writeAt(t, path, b, mt)
			read(wf)
			if ids := got(); body && fmt.Sprint(ids) != "[8]" || !body && fmt.Sprint(ids) != "[9]" {
				t.Errorf("after the damaged record: %v", ids)
			}
			if s.Stats().BadRecords != 1 {
				t.Errorf("%d bad records, want 1", s.Stats().BadRecords)
			}

			// The same damage in a chunk that is not the newest: at once.
			s2, _ := New(Config{Paths: []string{path}, ReadFrom: ingest.ReadFromBeginning}, slog.New(slog.DiscardHandler))
			wf2, _ := s2.start(path, false)
			if err := s2.read(ctx, wf2, out); err != nil {
				t.Fatal(err)
			}
			if wf2.retry || s2.Stats().BadRecords != 1 {
				t.Errorf("old chunk: retry %v, %d bad records", wf2.retry, s2.Stats().BadRecords)
			}
			got()
		})
	}
}

// FuzzReadEVTX: whatever the bytes, ReadEVTX neither panics nor fails
// (but for ErrNotEVTX), counts what it emits, and emits only events with a
// possible time (or none) that marshal to JSON; golang-evtx's output never
// reaches the standard logger.
func FuzzReadEVTX(f *testing.F) {
	w := evtxwriter.New()
	w.MustAdd(seedRecords()...)
	f.Add(w.Bytes())
	if b, err := os.ReadFile(filepath.Join(sharedDir, "Security_1_record.evtx")); err == nil {
		f.Add(b)
	}
	if b, err := os.ReadFile(parserDamagedSeeds(f)); err == nil {
		f.Add(b)
	}
	var std bytes.Buffer
	prev := log.Writer()
	log.SetOutput(&std)
	f.Cleanup(func() { log.SetOutput(prev) })
	now := seedTime.Add(24 * time.Hour)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "fuzz.evtx")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		n := 0
		st, err := ReadEVTXFile(context.Background(), p, DecoderConfig{Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }}, func(e ingest.Event) {
			n++
			if !e.Time.IsZero() && impossibleTime(e.Time, now) {
				t.Errorf("%s: impossible time %v", e.ID, e.Time)
			}
			if _, err := json.Marshal(e); err != nil {
				t.Errorf("%s: %v", e.ID, err)
			}
		})
		if err != nil && !errors.Is(err, ErrNotEVTX) {
			t.Fatal(err)
		}
		if st.Records != int64(n) {
			t.Errorf("%d events, Stats.Records %d", n, st.Records)
		}
		if std.Len() > 0 {
			t.Fatalf("the standard logger got: %q", std.String())
		}
	})
}
