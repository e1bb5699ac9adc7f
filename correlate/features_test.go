package correlate

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/rules"
)

func loadFeatures(t *testing.T) *rules.Set {
	t.Helper()
	set, err := rules.LoadFiles("testdata/features.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// op is one step of a feature scenario: an event (msg set) at event time
// at from node, an Advance to proc (adv), or a Settle to at (settle).
type op struct {
	at     time.Duration
	node   string
	msg    string
	alloc  string
	adv    time.Duration // Advance(t0+adv) when msg == "" and !settle
	settle bool
}

func ev(at time.Duration, node, msg string) op { return op{at: at, node: node, msg: msg} }
func evA(at time.Duration, node, msg, alloc string) op {
	return op{at: at, node: node, msg: msg, alloc: alloc}
}
func adv(p time.Duration) op    { return op{adv: p} }
func settle(p time.Duration) op { return op{at: p, settle: true} }

// change is an incident change as the scenarios compare them.
func change(in Incident) string {
	return fmt.Sprintf("%s/%s/%s@%s", in.Rule, in.Node, in.Status, in.UpdatedAt.Sub(t0))
}

func runOps(c *Correlator, ops []op, rulesOf string) []string {
	var out []string
	emit := func(in Incident) {
		if rulesOf == "" || strings.HasPrefix(in.Rule, rulesOf) {
			out = append(out, change(in))
		}
	}
	for i, o := range ops {
		switch {
		case o.settle:
			c.Settle(t0.Add(o.at), emit)
		case o.msg == "":
			c.Advance(t0.Add(o.adv), emit)
		default:
			e := ingest.Event{ID: fmt.Sprint("e", i), Time: t0.Add(o.at), Node: o.node, Source: "nomad.log", Kind: "test", Msg: o.msg}
			if o.alloc != "" {
				e.Fields = map[string]any{"alloc_id": o.alloc}
			}
			c.Process(&e, emit)
		}
	}
	return out
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

const m = time.Minute

// TestTimeDrivenRules covers absence, sequence, for, keep_firing_for,
// chained and inhibited rules, each scenario against the rules whose id
// starts with its prefix.
func TestTimeDrivenRules(t *testing.T) {
	set := loadFeatures(t)
	tests := []struct {
		name   string
		prefix string
		opts   Options
		ops    []op
		want   []string
	}{
		{"absence fires at its deadline, decided on the watermark", "t.absence", Options{}, []op{
			ev(0, "n1", "down"), adv(9 * m), settle(9*m + 59*time.Second),
		}, nil},
		{"absence fires once the watermark passes the deadline", "t.absence", Options{}, []op{
			ev(0, "n1", "down"), settle(10 * m), settle(30 * m),
		}, []string{"t.absence/n1/firing@10m0s"}},
		{"followed in time: no absence", "t.absence", Options{}, []op{
			ev(0, "n1", "down"), ev(9*m, "n1", "up"), settle(30 * m),
		}, nil},
		{"an expected event after the deadline resolves the absence", "t.absence", Options{}, []op{
			ev(0, "n1", "down"), settle(12 * m), ev(15*m, "n1", "up"), settle(16 * m),
		}, []string{"t.absence/n1/firing@10m0s", "t.absence/n1/updated@15m0s", "t.absence/n1/resolved@16m0s"}},
		{"events of other nodes past the deadline do not fire it while n1's source lags", "t.absence", Options{}, []op{
			// n1's log ships 9 minutes late; n2 is on time.
			ev(0, "n1", "down"), adv(1 * m), ev(1*m, "n2", "noise"),
			adv(9 * m), ev(9*m, "n2", "noise"), ev(1*m, "n1", "noise"),
			adv(11 * m), ev(11*m, "n2", "noise"), ev(2*m, "n1", "noise"),
			adv(12 * m), ev(12*m, "n2", "noise"), ev(3*m, "n1", "noise"),
			adv(13 * m), ev(13*m, "n2", "noise"), ev(8*m, "n1", "up"),
			adv(20 * m), settle(40 * m),
		}, nil},
		{"the same lag without the expected event fires only after n1's clock passes the deadline", "t.absence", Options{}, []op{
			ev(0, "n1", "down"),
			adv(11 * m), ev(11*m, "n2", "noise"), ev(2*m, "n1", "noise"),
			adv(15 * m), ev(15*m, "n2", "noise"), ev(9*m, "n1", "noise"),
			adv(19 * m), ev(19*m, "n2", "noise"), ev(10*m, "n1", "noise"),
			adv(20 * m),
		}, []string{"t.absence/n1/firing@10m0s"}},
		{"a node silent beyond the idle time no longer holds the watermark", "t.absence", Options{}, []op{
			ev(0, "n1", "down"), adv(4 * m), ev(4*m, "n2", "noise"), adv(9 * m), ev(9*m, "n2", "noise"),
			adv(10 * m), ev(10*m, "n2", "noise"), adv(9*m + 59*time.Second), adv(11 * m),
		}, []string{"t.absence/n1/firing@10m0s"}},

		{"a sequence in order fires", "t.seq", Options{}, []op{
			evA(0, "n1", "s1", "A"), evA(1*m, "n1", "s2", "A"), evA(2*m, "n1", "s3", "A"),
		}, []string{"t.seq/n1/firing@2m0s"}},
		{"out of order it does not", "t.seq", Options{}, []op{
			evA(0, "n1", "s2", "A"), evA(1*m, "n1", "s1", "A"), evA(2*m, "n1", "s3", "A"), settle(20 * m),
		}, nil},
		{"steps of different join keys do not make a sequence", "t.seq", Options{}, []op{
			evA(0, "n1", "s1", "A"), evA(1*m, "n1", "s2", "B"), evA(2*m, "n1", "s3", "A"), settle(20 * m),
		}, nil},
		{"a sequence longer than its span does not fire", "t.seq", Options{}, []op{
			evA(0, "n1", "s1", "A"), evA(5*m, "n1", "s2", "A"), evA(10*m+time.Second, "n1", "s3", "A"), settle(20 * m),
		}, nil},
		{"events arriving out of order are placed by event time", "t.seq", Options{Lateness: 5 * m}, []op{
			evA(0, "n1", "s1", "A"), evA(2*m, "n1", "s3", "A"), evA(1*m, "n1", "s2", "A"),
		}, []string{"t.seq/n1/firing@1m0s"}},

		{"for: fires once the condition held for 3m", "t.for", Options{}, []op{
			ev(0, "n1", "x"), ev(30*time.Second, "n1", "x"), adv(3*m + 29*time.Second), settle(3*m + 29*time.Second),
			settle(3*m + 30*time.Second),
		}, []string{"t.for/n1/firing@3m30s"}},
		{"for: a condition that stops holding before does not fire", "t.for_long", Options{}, []op{
			ev(0, "n1", "x"), ev(30*time.Second, "n1", "x"), settle(20 * m),
		}, nil},
		{"keep_firing_for: stays firing 10m after the condition ends", "t.keep", Options{}, []op{
			ev(0, "n1", "k"), settle(12 * m), settle(12*m + time.Second),
		}, []string{"t.keep/n1/firing@0s", "t.keep/n1/resolved@12m0.000000001s"}},
		{"keep_firing_for: the condition holding again keeps it open", "t.keep", Options{}, []op{
			ev(0, "n1", "k"), settle(5 * m), ev(5*m, "n1", "k"), settle(16 * m), settle(18 * m),
		}, []string{"t.keep/n1/firing@0s", "t.keep/n1/updated@5m0s", "t.keep/n1/resolved@17m0.000000001s"}},

		{"chained: a rule fires on the second firing of another", "t.chain", Options{}, []op{
			ev(0, "n1", "a"), ev(time.Second, "n1", "b"), settle(30 * m),
			ev(31*m, "n1", "a"), ev(32*m, "n1", "b"),
		}, []string{"t.chain/n1/firing@32m0s"}},
		{"chained: a rule never sees its own incidents", "t.loop", Options{}, []op{
			ev(0, "n1", "loop"), settle(30 * m),
		}, []string{"t.loop/n1/firing@0s", "t.loop/n1/resolved@30m0s"}},
		{"chained: the chain depth is bounded", "t.c", Options{MaxChainDepth: 2}, []op{
			ev(0, "n1", "go"),
		}, []string{"t.c1/n1/firing@0s", "t.c2/n1/firing@0s", "t.c3/n1/firing@0s"}},

		{"inhibited while the inhibitor fires on the node; fires when it resolves", "t.inhibited", Options{}, []op{
			ev(0, "n1", "down"), settle(11 * m), ev(12*m, "n1", "y"), ev(12*m, "n2", "y"),
			ev(13*m, "n1", "up"), settle(14 * m),
		}, []string{"t.inhibited/n2/firing@12m0s", "t.inhibited/n1/firing@14m0s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Logger = quietLog()
			got := runOps(New(set, tc.opts), tc.ops, tc.prefix)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

// TestLateness: events behind their source's newest by less than the
// lateness are on time and counted in the window; older ones are counted
// as late and still placed while their window covers them; events older
// than the window are dropped.
func TestLateness(t *testing.T) {
	set := loadFeatures(t)
	tests := []struct {
		name             string
		lateness         time.Duration
		ops              []op
		late, dropped    uint64
		wantCount        int
		wantFiringChange []string
	}{
		{"within the lateness", 2 * m, []op{
			ev(10*m, "n1", "c"), adv(10 * m), ev(9*m, "n1", "c"), ev(8*m+time.Second, "n1", "c"),
		}, 0, 0, 3, []string{"t.count/n1/firing@8m1s"}},
		{"beyond the lateness: late but placed", time.Minute, []op{
			ev(10*m, "n1", "c"), adv(10 * m), ev(8*m+30*time.Second, "n1", "c"), ev(8*m, "n1", "c"),
		}, 2, 0, 3, []string{"t.count/n1/firing@8m0s"}},
		{"older than the window: late and dropped", time.Minute, []op{
			ev(20*m, "n1", "c"), adv(20 * m), ev(5*m, "n1", "c"),
		}, 1, 1, 1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New(set, Options{Lateness: tc.lateness, Logger: quietLog()})
			got := runOps(c, tc.ops, "t.count")
			st := c.Stats()
			if st.Late != tc.late || st.Dropped != tc.dropped {
				t.Errorf("late %d dropped %d, want %d and %d", st.Late, st.Dropped, tc.late, tc.dropped)
			}
			g := c.rules["t.count"].groups["node=n1"]
			if g == nil || g.Counts[0] != tc.wantCount {
				t.Errorf("window count: group %+v, want %d", g, tc.wantCount)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantFiringChange) {
				t.Errorf("changes %v, want %v", got, tc.wantFiringChange)
			}
		})
	}
}

// TestClockSkewDoesNotResolveEarly: a node whose clock runs an hour ahead
// does not move the watermark, so another node's incident stays open.
func TestClockSkewDoesNotResolveEarly(t *testing.T) {
	set := loadFeatures(t)
	c := New(set, Options{Logger: quietLog()})
	got := runOps(c, []op{
		ev(0, "n1", "a"), ev(time.Second, "n1", "b"), adv(2 * time.Second),
		ev(time.Hour, "n2", "noise"), adv(3 * time.Second), ev(2*time.Hour, "n2", "noise"), adv(5 * m),
	}, "t.pair")
	if fmt.Sprint(got) != "[t.pair/n1/firing@1s]" {
		t.Fatalf("got %v", got)
	}
	if w := c.Watermark(); w.After(t0.Add(5 * m)) {
		t.Fatalf("watermark %v moved past the Advance clock", w.Sub(t0))
	}
	got = runOps(c, []op{adv(10 * m), adv(11*m + time.Second)}, "t.pair")
	if fmt.Sprint(got) != "[t.pair/n1/resolved@11m1s]" {
		t.Fatalf("after the quiet period: %v", got)
	}
}

// TestSnapshotKeepsTimeState: absences waiting, sequences half done and
// timelines survive a snapshot.
func TestSnapshotKeepsTimeState(t *testing.T) {
	set := loadFeatures(t)
	c := New(set, Options{Logger: quietLog()})
	runOps(c, []op{ev(0, "n1", "down"), evA(time.Second, "n1", "s1", "A"), evA(2*time.Second, "n1", "s2", "A"),
		ev(3*time.Second, "n1", "x"), ev(4*time.Second, "n1", "x"), adv(5 * time.Second)}, "")
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	c2 := New(set, Options{Logger: quietLog()})
	if err := c2.Restore(snap); err != nil {
		t.Fatal(err)
	}
	got := runOps(c2, []op{evA(3*m, "n1", "s3", "A"), settle(11 * m)}, "")
	want := "[t.seq/n1/firing@3m0s t.for/n1/firing@3m4s t.for/n1/resolved@5m4s t.absence/n1/firing@10m0s]"
	if fmt.Sprint(got) != want {
		t.Fatalf("got  %v\nwant %s", got, want)
	}
	snap2, err := c2.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	c3 := New(set, Options{Logger: quietLog()})
	if err := c3.Restore(snap2); err != nil {
		t.Fatal(err)
	}
	if len(c3.Open()) != 2 {
		t.Fatalf("restored %d open incidents, want 2", len(c3.Open()))
	}
	if got := runOps(c3, []op{settle(12 * m)}, ""); len(got) != 0 {
		t.Fatalf("restored correlator emitted %v", got)
	}
}

// TestQuietSourceReleasesWatermark: live, a caught-up source that delivers
// nothing more stops holding the watermark back after Idle, so pending
// evidence goes out as an update without waiting for its next event; while
// it is active, the watermark stays at its newest event.
func TestQuietSourceReleasesWatermark(t *testing.T) {
	set := loadFeatures(t)
	c := New(set, Options{Logger: quietLog(), UpdateInterval: time.Millisecond, Idle: 5 * time.Second})
	got := runOps(c, []op{
		adv(0), ev(0, "n1", "c"), ev(0, "n1", "c"), ev(0, "n1", "c"), ev(0, "n1", "c"), ev(0, "n1", "c"),
		adv(4 * time.Second),
	}, "t.count")
	if fmt.Sprint(got) != "[t.count/n1/firing@0s]" {
		t.Fatalf("while the source is active: %v", got)
	}
	got = runOps(c, []op{adv(6 * time.Second)}, "t.count")
	if fmt.Sprint(got) != "[t.count/n1/updated@6s]" {
		t.Fatalf("after the source went quiet: %v", got)
	}
	if open := c.Open(); len(open) != 1 || open[0].Count != 5 {
		t.Fatalf("open incidents %+v, want one with count 5", open)
	}
}

// TestNoTimeBeforeTheFirstEvent: a correlator whose clock is advanced
// (the durable correlator ticks every second) before any source delivered
// anything keeps no watermark, so a backlog older than the wall clock that
// arrives later is on time and fires; once sources exist and all go quiet,
// time goes on at the clock of Advance.
func TestNoTimeBeforeTheFirstEvent(t *testing.T) {
	set := loadFeatures(t)
	c := New(set, Options{Logger: quietLog(), Idle: 5 * time.Second})
	got := runOps(c, []op{adv(time.Hour), adv(2 * time.Hour)}, "t.count")
	if len(got) != 0 || !c.Watermark().IsZero() {
		t.Fatalf("before any event: changes %v, watermark %v; want none and zero", got, c.Watermark())
	}
	got = runOps(c, []op{ev(0, "n1", "c"), ev(0, "n1", "c"), ev(0, "n1", "c"), ev(0, "n1", "c"), ev(0, "n1", "c")}, "t.count")
	if fmt.Sprint(got) != "[t.count/n1/firing@0s]" || c.Stats().Late != 0 {
		t.Fatalf("the backlog: changes %v, %d late; want it to fire, none late", got, c.Stats().Late)
	}
	runOps(c, []op{adv(3 * time.Hour)}, "t.count")
	if w := c.Watermark(); !w.Equal(t0.Add(3 * time.Hour)) {
		t.Fatalf("every source quiet: watermark %v, want the clock of Advance %v", w, t0.Add(3*time.Hour))
	}
}

// TestResumeBeforeABacklog: a live correlator Resumed at the wall clock
// and fed a backlog an hour old, part of it before its first Advance and
// the rest after, finds every event on time: its sources count as seen
// at the clock of Resume, not at their events' old times (which made every
// source look idle at the first Advance, moved the watermark to its clock
// and made the rest of the backlog late: a 1-in-27 failure of
// TestRuleEditKeepsUnchangedRules in make test).
func TestResumeBeforeABacklog(t *testing.T) {
	set := loadFeatures(t)
	c := New(set, Options{Logger: quietLog(), Idle: 5 * time.Second, Lateness: 5 * time.Second})
	c.Resume(t0.Add(time.Hour))
	got := runOps(c, []op{ev(0, "n1", "c"), ev(0, "n1", "c"), adv(time.Hour + time.Second), ev(0, "n1", "c"), ev(0, "n1", "c"), ev(0, "n1", "c")}, "t.count")
	if fmt.Sprint(got) != "[t.count/n1/firing@0s]" || c.Stats().Late != 0 {
		t.Fatalf("the backlog across the first Advance: changes %v, %d late; want it to fire, none late", got, c.Stats().Late)
	}
	// Once the source is quiet for Idle on the clock of Advance, time goes on.
	runOps(c, []op{adv(time.Hour + 10*time.Second)}, "t.count")
	if w := c.Watermark(); !w.Equal(t0.Add(time.Hour + 10*time.Second)) {
		t.Fatalf("the source quiet past Idle: watermark %v, want the clock of Advance", w)
	}
}

// TestResumeAfterRestore: a correlator restored an hour after its
// snapshot's clock (a restart after an outage) and Resumed then finds the
// events since on time, also those of a source that delivers nothing
// before its first Advance: restored sources count as seen at the clock
// of Resume, not at the run before's (an hour ago: n2 looked idle, the
// watermark followed n1 alone, and n2's backlog was late).
func TestResumeAfterRestore(t *testing.T) {
	set := loadFeatures(t)
	opts := Options{Logger: quietLog(), Idle: 5 * time.Second, Lateness: 5 * time.Second}
	c := New(set, opts)
	c.Resume(t0)
	runOps(c, []op{ev(0, "n1", "c"), ev(0, "n2", "c"), adv(time.Second)}, "t.count")
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	c2 := New(set, opts)
	if err := c2.Restore(snap); err != nil {
		t.Fatal(err)
	}
	c2.Resume(t0.Add(time.Hour))
	got := runOps(c2, []op{ev(30*time.Second, "n1", "c"), adv(time.Hour + time.Second), ev(time.Second, "n2", "c"), ev(time.Second, "n2", "c")}, "t.count")
	if fmt.Sprint(got) != "[t.count/n2/firing@1s]" || c2.Stats().Late != 0 {
		t.Fatalf("the events since the snapshot: changes %v, %d late; want n2 to fire, none late", got, c2.Stats().Late)
	}
}

// TestRemovedRuleResolvesItsIncidents: a rule removed while its incident
// is open resolves it with the next emission, so no page stays open.
func TestRemovedRuleResolvesItsIncidents(t *testing.T) {
	set := loadFeatures(t)
	c := New(set, Options{Logger: quietLog()})
	got := runOps(c, []op{ev(0, "n1", "a"), ev(time.Second, "n1", "b")}, "t.pair")
	if fmt.Sprint(got) != "[t.pair/n1/firing@1s]" {
		t.Fatalf("got %v", got)
	}
	dir := t.TempDir()
	src, err := os.ReadFile("testdata/features.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The same file with t.pair renamed: t.pair is gone.
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(string(src), "id: t.pair", "id: t.pair2", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	next, err := rules.LoadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetRules(next)
	got = runOps(c, []op{adv(2 * time.Second)}, "t.pair")
	if fmt.Sprint(got) != "[t.pair/n1/resolved@1s]" {
		t.Fatalf("after the removal: %v", got)
	}
	if open := c.Open(); len(open) != 0 {
		t.Fatalf("open incidents %+v", open)
	}
}
