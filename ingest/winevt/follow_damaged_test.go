package winevt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Following damaged EVTX files live (issue #14, "Damaged EVTX, live").

// damage describes how to damage a copy of an EVTX file, deterministically.
type damage struct {
	seed  uint64
	flips int // random bytes flipped after the file header
	// ids are records (counted over the file) whose number gets its top
	// byte flipped: a huge number like 11457157452030545680.
	ids []int
	// lasts are chunk slots whose header's last record number gets its top
	// byte flipped; firsts those whose first number gets its low byte flipped.
	lasts, firsts []int
}

// apply damages b, an EVTX file.
func (dm damage) apply(b []byte) {
	recs := fileRecords(b)
	r := rand.New(rand.NewPCG(dm.seed, 14))
	for range dm.flips {
		k := fileHeaderSize + r.IntN(len(b)-fileHeaderSize)
		b[k] ^= byte(1 + r.IntN(255))
	}
	for _, i := range dm.ids {
		b[recs[i]+15] ^= 0x9e
	}
	for _, c := range dm.lasts {
		b[fileHeaderSize+c*chunkSize+0x27] ^= 0x5a
	}
	for _, c := range dm.firsts {
		b[fileHeaderSize+c*chunkSize+0x18] ^= 0x80
	}
}

// fileRecords returns the file offsets of the records of every chunk of
// b, in file order.
func fileRecords(b []byte) []int {
	var out []int
	for off := fileHeaderSize; off+chunkSize <= len(b); off += chunkSize {
		c := b[off : off+chunkSize]
		if !bytes.Equal(c[:8], chunkMagic) {
			continue
		}
		heads, _ := walkRecords(c, chunkSize, recordsLimit(c))
		for _, h := range heads {
			out = append(out, off+h.off)
		}
	}
	return out
}

// damagedCopy writes a damaged copy of the shared sample name into a new
// directory and returns its path.
func damagedCopy(t *testing.T, name string, dm damage) string {
	t.Helper()
	b, err := os.ReadFile(sharedFile(t, name))
	if err != nil {
		t.Fatal(err)
	}
	dm.apply(b)
	p := filepath.Join(t.TempDir(), "System.evtx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// logBuffer is a slog destination tests read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// followed is what following a file until it is read to the end gave.
type followed struct {
	ids        []string // event ids, in the order sent
	stats      Stats
	reads      int64 // times the file was decoded
	polls      int64 // polls until every record had been sent
	checkpoint uint64
	last       uint64 // the follower's position in the file
	logs       string
}

// follow follows path with the live Source (real poller, 5 ms interval)
// until want records arrived and five more polls passed.
func follow(t *testing.T, path string, want int) followed {
	t.Helper()
	dir := t.TempDir()
	cps, err := ingest.OpenCheckpoints(filepath.Join(dir, "checkpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	s, err := New(Config{Paths: []string{path}, ReadFrom: ingest.ReadFromBeginning, Checkpoints: cps, PollInterval: 5 * time.Millisecond}, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan ingest.Event, 64)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, out) }()
	var got followed
	deadline := time.After(30 * time.Second)
	for len(got.ids) < want {
		select {
		case e := <-out:
			e.Commit()
			got.ids = append(got.ids, e.ID)
		case <-deadline:
			cancel()
			<-done
			t.Fatalf("%d of %d records after 30 s (%d polls); log:\n%s", len(got.ids), want, s.polls.Load(), tail(logs.String()))
		}
	}
	got.polls = s.polls.Load()
	for s.polls.Load() < got.polls+5 {
		select {
		case e := <-out:
			got.ids = append(got.ids, e.ID) // one too many: reported by the caller
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var cp checkpoint
	abs, _ := filepath.Abs(path)
	if ok, err := cps.Get("winevt:"+abs, &cp); err != nil || (!ok && want > 0) {
		t.Fatalf("checkpoint: %v %v", ok, err)
	}
	got.checkpoint, got.stats, got.reads, got.logs = cp.RecordID, s.Stats(), s.reads.Load(), logs.String()
	got.last = s.files[abs].last
	return got
}

func tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}

// fileMaxPlausible is the highest plausible record number of an EVTX file.
func fileMaxPlausible(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	var st Stats
	slots, err := scanSlots(f, fi.Size(), "x", &st)
	if err != nil {
		t.Fatal(err)
	}
	return plausibleMax(f, slots)
}

// TestSourceFollowsDamagedFile follows damaged copies of a real System log
// (plaso_System.evtx, 5,009 records, 33 chunks) and checks that the live
// Source publishes exactly what replay (ReadEVTX) reads from the same file,
// in the same order, in one read of the file rather than a retry per
// damaged record; that its checkpoint stays on plausible record numbers
// (never one of the flipped, huge ones); that it never starts over ("reading
// it from the beginning"); and that it counts each damaged record once.
func TestSourceFollowsDamagedFile(t *testing.T) {
	cases := []struct {
		name string
		dm   damage
	}{
		// The case: record numbers flipped to huge values, among them
		// the last record of the newest chunk.
		{"huge record numbers", damage{ids: []int{10, 11, 2000, 4000, 5008}}},
		{"300 random bytes", damage{seed: 1, flips: 300}},
		{"2000 random bytes", damage{seed: 2, flips: 2000}},
		{"5000 random bytes", damage{seed: 3, flips: 5000}},
		{"chunk headers", damage{lasts: []int{3, 26}, firsts: []int{7, 8, 26}, ids: []int{160}}},
		{"everything", damage{seed: 4, flips: 1000, ids: []int{5, 3000}, lasts: []int{1}, firsts: []int{20}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := damagedCopy(t, "plaso_System.evtx", tc.dm)
			var want []string
			rst, err := ReadEVTXFile(context.Background(), path, DecoderConfig{Log: slog.New(slog.DiscardHandler)}, func(e ingest.Event) { want = append(want, e.ID) })
			if err != nil {
				t.Fatal(err)
			}
			if rst.BadRecords == 0 {
				t.Fatal("the copy is not damaged")
			}
			got := follow(t, path, len(want))
			if fmt.Sprint(got.ids) != fmt.Sprint(want) {
				t.Errorf("followed %d records, replay read %d; first difference at %d", len(got.ids), len(want), firstDiff(got.ids, want))
			}
			maxID := fileMaxPlausible(t, path)
			if got.checkpoint > maxID || got.last > maxID {
				t.Errorf("checkpoint %d, position %d: beyond the file's last plausible record %d", got.checkpoint, got.last, maxID)
			}
			if nums := replayedNumbers(t, path); len(nums) != len(want) {
				t.Errorf("%d record numbers for %d events", len(nums), len(want))
			} else if wantCP := nums[len(nums)-1]; got.checkpoint != wantCP {
				t.Errorf("checkpoint %d, want %d (the last record sent)", got.checkpoint, wantCP)
			}
			if strings.Contains(got.logs, "from the beginning") {
				t.Errorf("the follower started over:\n%s", tail(got.logs))
			}
			// Read once, plus the retries the newest chunk's end may get.
			if got.reads > maxRecordAttempts {
				t.Errorf("the file was decoded %d times (in %d polls), want at most %d", got.reads, got.polls, maxRecordAttempts)
			}
			if got.stats.Records != int64(len(want)) || got.stats.BadRecords != rst.BadRecords || got.stats.BadChunks != rst.BadChunks {
				t.Errorf("follower counted %d records, %d bad records, %d bad chunks; replay %d, %d, %d",
					got.stats.Records, got.stats.BadRecords, got.stats.BadChunks, rst.Records, rst.BadRecords, rst.BadChunks)
			}
			if n := strings.Count(got.logs, "skipping damaged record"); int64(n) != got.stats.BadRecords {
				t.Errorf("%d damaged-record warnings for %d damaged records", n, got.stats.BadRecords)
			}
			t.Logf("%d records, %d damaged, %d bad chunks, %d bad times; %d polls, %d reads", len(want), rst.BadRecords, rst.BadChunks, rst.BadTimes, got.polls, got.reads)
		})
	}
}

// replayedNumbers returns the record numbers (record headers') of the
// records replay reads from path, in order.
func replayedNumbers(t *testing.T, path string) []uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	info, err := readFileHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	var st Stats
	slots, err := scanSlots(f, fi.Size(), "x", &st)
	if err != nil {
		t.Fatal(err)
	}
	d := &decoder{fi: info, name: "x", norm: &normalizer{}, ceiling: ceiling(slots), now: time.Now()}
	var out []uint64
	for _, sl := range slots {
		co := d.slot(f, sl)
		for _, r := range co.recs {
			if r.err == nil {
				out = append(out, r.id)
			}
		}
	}
	return out
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestReplayDamagedEventsMarshal: every event replay reads from a damaged
// copy has a possible time and marshals to JSON (klaxon replay --events),
// and the times of the records around a damaged one are untouched.
func TestReplayDamagedEventsMarshal(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for seed := uint64(1); seed <= 5; seed++ {
		path := damagedCopy(t, "plaso_System.evtx", damage{seed: seed, flips: 3000})
		st, err := ReadEVTXFile(context.Background(), path, DecoderConfig{Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }}, func(e ingest.Event) {
			if !e.Time.IsZero() && impossibleTime(e.Time, now) {
				t.Errorf("%s: impossible time %v", e.ID, e.Time)
			}
			if _, err := json.Marshal(e); err != nil {
				t.Errorf("%s: %v", e.ID, err)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("seed %d: %d records, %d bad times, %d bad records", seed, st.Records, st.BadTimes, st.BadRecords)
	}
}
