package winevt

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/winetest"
)

// needEvtxexport returns the path of libevtx's evtxexport, skipping the test
// when it is absent (failing it when KLAXON_REQUIRE_EXTERNAL=1).
func needEvtxexport(t testing.TB) string {
	t.Helper()
	winetest.SkipLinuxProgram(t, "evtxexport", "libevtx-utils")
	p, err := exec.LookPath("evtxexport")
	if err != nil {
		if os.Getenv("KLAXON_REQUIRE_EXTERNAL") == "1" {
			t.Fatalf("evtxexport (Debian libevtx-utils) is required: %v", err)
		}
		t.Skip("evtxexport not installed (apt-get install libevtx-utils); skipping the reference comparison")
	}
	return p
}

// evtxexportEvents runs evtxexport -f xml on path and decodes its output
// with ReadXML.
func evtxexportEvents(t testing.TB, path string) []ingest.Event {
	t.Helper()
	out, err := exec.Command(needEvtxexport(t), "-f", "xml", path).Output()
	if err != nil {
		t.Fatalf("evtxexport %s: %v", path, err)
	}
	var evs []ingest.Event
	st, err := ReadXML(context.Background(), bytes.NewReader(out), "evtxexport", DecoderConfig{}, func(e ingest.Event) { evs = append(evs, e) })
	if err != nil || st.BadRecords != 0 {
		t.Fatalf("ReadXML of evtxexport output: %v %v", err, st.Errors)
	}
	return evs
}

func seedFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "seeds.evtx")
	if err := writeSeeds(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func byID(evs []ingest.Event) map[string]ingest.Event {
	m := make(map[string]ingest.Event, len(evs))
	for _, e := range evs {
		m[e.ID] = e
	}
	return m
}

func TestSeedsEVTX(t *testing.T) {
	evs, st := readAll(t, seedFile(t))
	if st.Records != 8 || st.BadRecords != 0 || st.ChecksumErrors != 0 || len(st.Errors) != 0 {
		t.Fatalf("stats %+v", st)
	}
	ids := []string{}
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	wantIDs := []string{}
	for _, n := range []string{"101", "102", "103", "104", "105"} {
		wantIDs = append(wantIDs, "winevt:win-client-7.corp.example:System:"+n)
	}
	for _, n := range []string{"106", "107", "108"} {
		wantIDs = append(wantIDs, "winevt:win-client-7.corp.example:Application:"+n)
	}
	if !reflect.DeepEqual(ids, wantIDs) {
		t.Fatalf("ids %v\nwant %v", ids, wantIDs)
	}
	srv := evs[0]
	if srv.Kind != "Srv/2019" || srv.Level != ingest.LevelError || srv.Node != "win-client-7" || srv.Source != ingest.SourceWinEvt ||
		srv.Field("data_1") != "Nonpaged" || srv.Field("qualifiers") != "49152" || srv.Field("event_id") != "2019" ||
		srv.Field("binary") != "000004000100540000000000E30700C0" || srv.Msg != "Srv event 2019: Nonpaged" ||
		!srv.Time.Equal(seedTime) {
		t.Errorf("Srv 2019: %+v", srv)
	}
	if e := evs[1]; e.Kind != "Srv/2020" || e.Field("strings") != "Paged" {
		t.Errorf("Srv 2020: %+v", e)
	}
	if e := evs[2]; e.Kind != "Microsoft-Windows-Resource-Exhaustion-Detector/2004" || e.Level != ingest.LevelWarn ||
		e.Field("ProcessName1") != "nomad.exe" || e.Field("user_sid") != "S-1-5-18" || e.Field("process_id") != "2104" ||
		e.Field("keywords") != "0x8000000020000000" || e.Field("qualifiers") != "" {
		t.Errorf("RED 2004: %+v", e)
	}
	// %%1450 in words, as Event Viewer shows it (messages.go); the reference kept.
	if e := evs[3]; e.Kind != "Service Control Manager/7000" || e.Msg != "The Nomad service failed to start due to the following error: "+msgNoResources ||
		e.Field("param2") != msgNoResources || e.Field("param2_insert") != "%%1450" {
		t.Errorf("SCM 7000: %+v", e)
	}
	if e := evs[4]; !strings.Contains(e.Msg, "Insufficient system resources exist") || e.Field("param2") != msgNoResources {
		t.Errorf("SCM 7023: %+v", e)
	}
	if e := evs[5]; e.Source != ingest.SourceWinEvt || e.Kind != "nomad/2" || e.Field("data_1") != "service ready" {
		t.Errorf("nomad 2 stays winevt: %+v", e)
	}
	checkNomadEvents(t, evs[6], evs[7])
}

// checkNomadEvents checks the two seed nomad EventID 4 events.
func checkNomadEvents(t *testing.T, warn, errEv ingest.Event) {
	t.Helper()
	if warn.Source != ingest.SourceNomadLog || warn.Kind != "client.driver_mgr" || warn.Level != ingest.LevelWarn ||
		warn.Msg != "failed to reattach to plugin, starting new instance" || warn.Field("driver") != "app_pool" ||
		warn.Field("err") != "Reattachment process not found" || warn.Node != "win-client-7" ||
		warn.ID != "winevt:win-client-7.corp.example:Application:107" || warn.Field("channel") != "Application" {
		t.Errorf("nomad warn: %+v", warn)
	}
	if errEv.Source != ingest.SourceNomadLog || errEv.Kind != "client.driver_mgr" || errEv.Level != ingest.LevelError ||
		errEv.Msg != "dispensing initial plugin failed" ||
		errEv.Field("error") != "failed to start plugin: failed to launch plugin: pipe: "+msgNoResources {
		t.Errorf("nomad error: %+v", errEv)
	}
}

// TestSeedsEvtxexport proves the test writer against a second, independent
// reader: libevtx's evtxexport reads back the same records as golang-evtx.
func TestSeedsEvtxexport(t *testing.T) {
	path := seedFile(t)
	ours, _ := readAll(t, path)
	theirs := evtxexportEvents(t, path)
	compareEvents(t, ours, theirs, true)
}

// compareEvents compares two decodings of the same records.
func compareEvents(t *testing.T, a, b []ingest.Event, withMsg bool) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%d events against %d", len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		if !withMsg {
			x.Msg, y.Msg = "", ""
		}
		if !x.Time.Equal(y.Time) {
			t.Errorf("event %d: time %v against %v", i, x.Time, y.Time)
		}
		x.Time = y.Time
		if !reflect.DeepEqual(x, y) {
			t.Errorf("event %d differs:\n%+v\n%+v", i, x, y)
		}
	}
}

// TestRenderedXMLMatchesEVTX: the same records as rendered XML (hand-written
// in testdata/) decode to the same events as their EVTX form.
func TestRenderedXMLMatchesEVTX(t *testing.T) {
	fromEVTX, _ := readAll(t, seedFile(t))
	f, err := os.Open("testdata/seeds.xml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var fromXML []ingest.Event
	st, err := ReadXML(context.Background(), f, "seeds.xml", DecoderConfig{}, func(e ingest.Event) { fromXML = append(fromXML, e) })
	if err != nil || st.Records != 8 || st.BadRecords != 0 {
		t.Fatalf("ReadXML: %v %+v", err, st)
	}
	want := "The server was unable to allocate from the system paged pool because the pool was empty."
	if fromXML[1].Msg != want {
		t.Errorf("RenderingInfo message: %q", fromXML[1].Msg)
	}
	fromXML[1].Msg = fromEVTX[1].Msg
	compareEvents(t, fromEVTX, fromXML, true)
	checkNomadEvents(t, fromXML[6], fromXML[7])
}

// TestEvtxexportAgreesOnRealFiles compares ReadEVTX with evtxexport's XML on
// real samples: the same records with the same ids, kinds, times and strings.
func TestEvtxexportAgreesOnRealFiles(t *testing.T) {
	for _, name := range []string{"plaso_System.evtx", "security_sample.evtx", "many-events-application.evtx", "2-vss_7-System.evtx"} {
		t.Run(name, func(t *testing.T) {
			path := sharedFile(t, name)
			ours, _ := readAll(t, path)
			theirs := byID(evtxexportEvents(t, path))
			if len(ours) != len(theirs) {
				t.Fatalf("%d records against evtxexport's %d", len(ours), len(theirs))
			}
			bad := 0
			for _, e := range ours {
				o, ok := theirs[e.ID]
				switch {
				case !ok:
					t.Errorf("%s: not in evtxexport's output", e.ID)
				case e.Kind != o.Kind || e.Level != o.Level || !e.Time.Equal(o.Time) || e.Node != o.Node:
					t.Errorf("%s: %s %s %v %s against %s %s %v %s", e.ID, e.Kind, e.Level, e.Time, e.Node, o.Kind, o.Level, o.Time, o.Node)
				case canonStrings(e.Field("strings")) != canonStrings(o.Field("strings")):
					bad++
					if bad < 5 {
						t.Logf("%s: strings %q against %q", e.ID, e.Field("strings"), o.Field("strings"))
					}
				}
			}
			if bad > len(ours)/100 {
				t.Errorf("%d of %d records differ in their insertion strings", bad, len(ours))
			}
		})
	}
}

// TestSetup2004 is the negative case of the Resource-Exhaustion-Detector
// rule: EventID 2004 of Microsoft-Windows-Setup keeps its provider in Kind.
func TestSetup2004(t *testing.T) {
	for _, name := range []string{"omerbenamram-evtx_system.evtx", "2-vss_7-System.evtx"} {
		evs, _ := readAll(t, sharedFile(t, name))
		n := 0
		for _, e := range evs {
			if e.Field("event_id") != "2004" {
				continue
			}
			n++
			if e.Kind != "Microsoft-Windows-Setup/2004" || e.Field("provider") != "Microsoft-Windows-Setup" {
				t.Errorf("%s: %s: kind %q", name, e.ID, e.Kind)
			}
		}
		if n == 0 {
			t.Errorf("%s: no EventID 2004", name)
		}
		t.Logf("%s: %d × Microsoft-Windows-Setup/2004", name, n)
	}
}

func TestReadXMLForms(t *testing.T) {
	one := `<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Srv"/><EventID Qualifiers="49152">3221227492</EventID><Level>2</Level><TimeCreated SystemTime="2024-03-05T10:00:00.1234567Z"/><EventRecordID>7</EventRecordID><Channel>System</Channel><Computer>Host</Computer></System><EventData><Data>Paged</Data></EventData></Event>`
	cases := map[string]string{
		"bare":         one,
		"concatenated": one + "\r\n" + strings.ReplaceAll(one, ">7<", ">8<"),
		"declaration":  `<?xml version="1.0" encoding="utf-8"?>` + "\n" + one,
		"bom":          "\ufeff" + one,
		"utf16":        utf16BOM(one),
		"garbage":      one + "<Event xmlns='x'><System><Broken></Event>\n" + strings.ReplaceAll(one, ">7<", ">9<"),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			var evs []ingest.Event
			st, err := ReadXML(context.Background(), strings.NewReader(in), name, DecoderConfig{}, func(e ingest.Event) { evs = append(evs, e) })
			if err != nil || len(evs) == 0 {
				t.Fatalf("%v %+v", err, st)
			}
			if e := evs[0]; e.Kind != "Srv/2020" || e.Field("qualifiers") != "49152" || e.Node != "host" {
				t.Errorf("%+v", e)
			}
			if name == "garbage" && (len(evs) != 2 || st.BadRecords != 1 || len(st.Errors) != 1 || !strings.Contains(st.Errors[0], "garbage: event at line 1")) {
				t.Errorf("garbage: %d events, %+v", len(evs), st)
			}
			if !DetectXML([]byte(in)) {
				t.Errorf("DetectXML false")
			}
		})
	}
	if DetectXML([]byte(`<Event xmlns="urn:other">`)) || DetectXML([]byte("2024-01-01 [INFO] x")) || !DetectXML([]byte("<Events>\n<Event ")) {
		t.Error("DetectXML")
	}
	if !DetectEVTX([]byte("ElfFile\x00rest")) || DetectEVTX([]byte("ElfChnk\x00")) {
		t.Error("DetectEVTX")
	}
}

func utf16BOM(s string) string {
	b := []byte{0xFF, 0xFE}
	for _, r := range s {
		b = append(b, byte(r), byte(r>>8))
	}
	return string(b)
}

func FuzzReadXML(f *testing.F) {
	seed, _ := os.ReadFile("testdata/seeds.xml")
	f.Add(seed)
	f.Add([]byte(`<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><EventID>4</EventID><Provider Name="nomad"/><Level>3</Level></System><EventData><Data>[x</Data></EventData></Event>`))
	f.Add([]byte(`<Events><Event><UserData><A><B>x</B><C/></A></UserData></Event></Events>`))
	f.Fuzz(func(t *testing.T, in []byte) {
		_, _ = ReadXML(context.Background(), bytes.NewReader(in), "fuzz", DecoderConfig{}, func(ingest.Event) {})
		_ = DetectXML(in)
	})
}

// canonStrings evens out how evtxexport and we render numbers and times
// (zero-padded hex, 9 or 7 fraction digits) in the insertion strings.
func canonStrings(s string) string {
	parts := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), " | ")
	for i, p := range parts {
		if t, ok := parseSystemTime(p); ok && len(p) > 19 && p[4] == '-' {
			parts[i] = t.Format(time.RFC3339Nano)
			continue
		}
		parts[i] = canonHex(p)
	}
	return strings.Join(parts, " | ")
}

func TestUserDataAndLevels(t *testing.T) {
	in := `<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Microsoft-Windows-Eventlog" Guid="{fc65ddd8-d6ef-4962-83d5-6e5cfe9ce148}"/><EventID>1102</EventID><Level>5</Level><Keywords>0x4020000000000000</Keywords><TimeCreated SystemTime="2024-03-05T10:00:00Z"/><EventRecordID>1</EventRecordID><Channel>Security</Channel><Computer>dc1.corp</Computer></System><UserData><LogFileCleared xmlns="http://manifests.microsoft.com/win/2004/08/windows/eventlog"><SubjectUserSid>S-1-5-21-1</SubjectUserSid><SubjectUserName>admin</SubjectUserName></LogFileCleared></UserData></Event>`
	var evs []ingest.Event
	ident := ingest.NewIdentity()
	ident.Learn("node-id-1", "dc-one", "dc1.corp")
	_, err := ReadXML(context.Background(), strings.NewReader(in), "t", DecoderConfig{Identity: ident}, func(e ingest.Event) { evs = append(evs, e) })
	if err != nil || len(evs) != 1 {
		t.Fatal(err, evs)
	}
	e := evs[0]
	if e.Kind != "Microsoft-Windows-Eventlog/1102" || e.Level != ingest.LevelDebug || e.Field("SubjectUserName") != "admin" ||
		e.Field("strings") != "S-1-5-21-1 | admin" || e.Node != "dc-one" || e.Msg != "Microsoft-Windows-Eventlog event 1102: S-1-5-21-1; admin" {
		t.Errorf("%+v", e)
	}
	for raw, want := range map[string]string{"0": "info", "1": "error", "2": "error", "3": "warn", "4": "info", "5": "debug"} {
		if got := winLevel(raw); got != want {
			t.Errorf("level %s: %s", raw, got)
		}
	}
}
