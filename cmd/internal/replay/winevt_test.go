package replay

import (
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest/winevt/evtxwriter"
)

// seedEVTX writes the Windows events of seeds 000 and 001 for one node
// into an EVTX file: Srv 2019/2020, Resource-Exhaustion-Detector 2004,
// error 1450, and Nomad's own Application-log lines (EventID 4).
func seedEVTX(t *testing.T, path string) {
	t.Helper()
	t0 := time.Date(2024, 3, 5, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	rec := func(r evtxwriter.Record) evtxwriter.Record {
		r.Computer = "WIN-CLIENT-7.corp.example"
		if r.Channel == "" {
			r.Channel = "System"
		}
		return r
	}
	w := evtxwriter.New()
	w.MustAdd(
		rec(evtxwriter.Record{ID: 1, Time: at(0), Provider: "Srv", EventID: 2019, Qualifiers: 49152, Level: 2, Data: []evtxwriter.NamedData{{Value: "Nonpaged"}}}),
		rec(evtxwriter.Record{ID: 2, Time: at(5), Provider: "Srv", EventID: 2020, Qualifiers: 49152, Level: 2, Data: []evtxwriter.NamedData{{Value: "Paged"}}}),
		rec(evtxwriter.Record{ID: 3, Time: at(10), Provider: "Microsoft-Windows-Resource-Exhaustion-Detector", EventID: 2004, Level: 3,
			Data: []evtxwriter.NamedData{evtxwriter.D("ProcessName1", "nomad.exe")}}),
		rec(evtxwriter.Record{ID: 4, Time: at(21), Provider: "nomad", EventID: 4, Level: 3, Channel: "Application",
			Data: []evtxwriter.NamedData{{Value: ` client.driver_mgr: failed to reattach to plugin, starting new instance: driver=app_pool err="Reattachment process not found"`}}}),
		rec(evtxwriter.Record{ID: 5, Time: at(22), Provider: "Service Control Manager", EventID: 7000, Qualifiers: 49152, Level: 2,
			Data: []evtxwriter.NamedData{evtxwriter.D("param1", "Nomad"), evtxwriter.D("param2", "%%1450")}}),
		// Another provider's EventID 2004 must not fire the detector rule.
		rec(evtxwriter.Record{ID: 6, Time: at(30), Provider: "Microsoft-Windows-Setup", EventID: 2004, Level: 4}),
	)
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
}

func firedRules(changes []correlate.Incident) []string {
	var out []string
	for _, in := range lastByID(changes) {
		out = append(out, in.Rule+"@"+in.Node)
	}
	sort.Strings(out)
	return out
}

// TestReplayWindowsSeeds: the Windows rules fire on generated EVTX and on
// rendered XML of the same events; desktop-heap exhaustion fires from
// Nomad's own Application-log lines plus error 1450 of the same node.
func TestReplayWindowsSeeds(t *testing.T) {
	want := "nomad.windows.desktop_heap_exhaustion@win-client-7 windows.resource_exhaustion@win-client-7 windows.srv.pool_exhaustion@win-client-7"
	evtx := filepath.Join(t.TempDir(), "System.evtx")
	seedEVTX(t, evtx)
	changes, st := replayJSON(t, Options{}, evtx)
	if st.Lines != 6 || st.Unparsed != 0 {
		t.Errorf("stats %+v, want 6 records", st)
	}
	if got := strings.Join(firedRules(changes), " "); got != want {
		t.Errorf("EVTX: fired %s\nwant %s", got, want)
	}
	// The hand-written rendered XML of the winevt package (wevtutil shape).
	changes, _ = replayJSON(t, Options{}, "../../../ingest/winevt/testdata/seeds.xml")
	if got := strings.Join(firedRules(changes), " "); got != want {
		t.Errorf("XML: fired %s\nwant %s", got, want)
	}
}

// TestReplayRealEVTXFiresNothing: the real System logs (with EventID 2004
// from Microsoft-Windows-Setup) fire no Windows rule.
func TestReplayRealEVTXFiresNothing(t *testing.T) {
	for _, name := range []string{"omerbenamram-evtx_system.evtx", "2-vss_7-System.evtx", "plaso_System.evtx"} {
		path := needShared(t, filepath.Join("evtx", name))
		changes, st := replayJSON(t, Options{}, path)
		if st.Lines == 0 {
			t.Errorf("%s: no records", name)
		}
		if len(changes) != 0 {
			t.Errorf("%s: fired %v", name, firedRules(changes))
		}
	}
}
