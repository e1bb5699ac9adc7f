package winevt

import (
	"context"
	"errors"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/klaxon-dev/klaxon/ingest"
)

func TestResolveInserts(t *testing.T) {
	for in, want := range map[string]string{
		"%%1450":                    "Insufficient system resources exist to complete the requested service.",
		"%%8":                       "Not enough memory resources are available to process this command.",
		"%%2147942414":              "Not enough memory resources are available to complete this operation.", // HRESULT 0x8007000E
		"error %%5 here":            "error Access is denied. here",
		"\r\n\t\t%%1058\r\n\t\t%%1": "\r\n\t\tThe service cannot be started, either because it is disabled or because it has no enabled devices associated with it.\r\n\t\tIncorrect function.",
	} {
		if got, ok := resolveInserts(in); !ok || got != want {
			t.Errorf("resolveInserts(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"Nomad", "%%", "100%%", "%%99999", "%%2147549471", "%%abc", "%%184467440737095516150"} {
		if got, ok := resolveInserts(in); ok || got != in {
			t.Errorf("resolveInserts(%q) = %q, %v; want it unchanged", in, got, ok)
		}
	}
}

// words collapses white space (Windows puts a line break where klaxon's
// one-line rendering has a space).
func words(s string) string { return strings.Join(strings.Fields(s), " ") }

var renderingInfo = regexp.MustCompile(`<RenderingInfo[^>]*>.*?</RenderingInfo>`)

func readXMLString(t *testing.T, s string) []ingest.Event {
	t.Helper()
	var evs []ingest.Event
	st, err := ReadXML(context.Background(), strings.NewReader(s), "scm-rendered.xml", DecoderConfig{}, func(e ingest.Event) { evs = append(evs, e) })
	if err != nil || st.BadRecords > 0 {
		t.Fatalf("ReadXML: %v %v", err, st.Errors)
	}
	return evs
}

// recordedEvent is a live event from recorded data: the XML EvtRender gives
// (no RenderingInfo) and the message EvtFormatMessage gave.
type recordedEvent struct {
	xml, msg string
	err      error
	asked    string
}

func (r *recordedEvent) XML() (string, error) { return r.xml, nil }
func (r *recordedEvent) Message(provider string) (string, error) {
	r.asked = provider
	return r.msg, r.err
}

// TestSCMMessagesInWords: the Service Control Manager's events of
// testdata/scm-rendered.xml (the shape of `wevtutil qe /f:RenderedXml`)
// read three ways: with Windows' message (RenderingInfo) it is the
// message; without it (EVTX, `wevtutil qe /f:xml`) klaxon renders the same
// words itself; live, EvtFormatMessage's message makes the same Event as
// the rendered XML, and without one the same as klaxon's rendering. The
// "%%N" data are in words, the reference kept in <field>_insert.
func TestSCMMessagesInWords(t *testing.T) {
	b, err := os.ReadFile("testdata/scm-rendered.xml")
	if err != nil {
		t.Fatal(err)
	}
	rendered := readXMLString(t, string(b))
	plain := readXMLString(t, renderingInfo.ReplaceAllString(string(b), ""))
	if len(rendered) != 7 || len(plain) != 7 {
		t.Fatalf("%d and %d events, want 7", len(rendered), len(plain))
	}
	docs := regexp.MustCompile(`(?s)<Event xmlns.*?</Event>`).FindAllString(string(b), -1)
	windowsMsg := regexp.MustCompile(`(?s)<Message>(.*?)</Message>`)
	for i, r := range rendered {
		p := plain[i]
		if strings.Contains(r.Msg, "%%") || strings.Contains(p.Msg, "%%") {
			t.Errorf("%s: a reference left in the message: %q / %q", r.ID, r.Msg, p.Msg)
		}
		if words(p.Msg) != words(r.Msg) {
			t.Errorf("%s: klaxon renders\n  %q\nWindows renders\n  %q", r.Kind, p.Msg, words(r.Msg))
		}
		r.Msg, p.Msg = "", ""
		if !reflect.DeepEqual(r, p) {
			t.Errorf("%s: the events differ beyond the message:\n%+v\n%+v", r.ID, r, p)
		}

		// Live: the XML as EvtRender gives it and the message as
		// EvtFormatMessage gives it (with a CRLF as Windows has it).
		msg := windowsMsg.FindStringSubmatch(docs[i])[1]
		msg = strings.ReplaceAll(msg, "&#13;&#10;", "\r\n")
		le := &recordedEvent{xml: renderingInfo.ReplaceAllString(docs[i], ""), msg: msg}
		live, msgErr, err := decodeLive(le, &normalizer{})
		if err != nil || msgErr != nil {
			t.Fatalf("decodeLive: %v %v", err, msgErr)
		}
		if le.asked != "Service Control Manager" {
			t.Errorf("message asked of provider %q", le.asked)
		}
		if want := rendered[i]; live.Msg != strings.TrimSpace(msg) || live.ID != want.ID || !reflect.DeepEqual(live.Fields, want.Fields) {
			t.Errorf("live %+v\nrendered XML %+v (msg %q)", live, want, msg)
		}
		// No message from the provider: klaxon's own rendering.
		le = &recordedEvent{xml: le.xml, err: errors.New("EvtFormatMessage: The message resource is present but the message was not found")}
		live, msgErr, err = decodeLive(le, &normalizer{})
		if err != nil || msgErr == nil || words(live.Msg) != words(msg) {
			t.Errorf("live without a message: %q (%v, %v), want %q", live.Msg, err, msgErr, words(msg))
		}
	}
	first := plain[0]
	if first.Fields["param2"] != "Insufficient system resources exist to complete the requested service." || first.Fields["param2_insert"] != "%%1450" ||
		first.Fields["strings"] != "Nomad | Insufficient system resources exist to complete the requested service." {
		t.Errorf("fields %v", first.Fields)
	}
	if first.Msg != "The Nomad service failed to start due to the following error: Insufficient system resources exist to complete the requested service." {
		t.Errorf("msg %q", first.Msg)
	}
	if plain[1].Fields["param2_insert"] != "%%8" || plain[3].Fields["param2_insert"] != "%%2147942414" || plain[2].Fields["param3_insert"] != "%%1068" {
		t.Errorf("inserts kept: %v %v %v", plain[1].Fields, plain[2].Fields, plain[3].Fields)
	}
}

// TestOtherProvidersKeepTheirReferences: "%%N" of providers whose
// parameter messages are not the system's (Security auditing's msobjs.dll,
// where %%1793 is "<value not set>") are left as they are.
func TestOtherProvidersKeepTheirReferences(t *testing.T) {
	evs := readXMLString(t, `<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Microsoft-Windows-Security-Auditing"/><EventID>4738</EventID><Level>0</Level><TimeCreated SystemTime="2024-03-05T10:00:00Z"/><EventRecordID>9</EventRecordID><Channel>Security</Channel><Computer>WIN-7</Computer></System><EventData><Data Name="PasswordLastSet">%%1793</Data></EventData></Event>`)
	if len(evs) != 1 || evs[0].Fields["PasswordLastSet"] != "%%1793" || evs[0].Fields["PasswordLastSet_insert"] != nil ||
		evs[0].Msg != "Microsoft-Windows-Security-Auditing event 4738: %%1793" {
		t.Errorf("%+v", evs)
	}
}

// TestEVTXSamplesInWords: the real EVTX samples (../shared/testdata/evtx;
// skipped when absent) hold the Service Control Manager's references as
// "%%N": their messages come out in words, the references kept; the
// Security log's references stay.
func TestEVTXSamplesInWords(t *testing.T) {
	want := map[string]struct{ msg, field, insert string }{
		// omerbenamram-evtx_system.evtx
		"winevt:win-p4siaa0sqco:System:35": {"The CldFlt service failed to start due to the following error: The request is not supported.", "param2", "%%50"},
		"winevt:win-p4siaa0sqco:System:40": {"The Spooler service terminated with the following error: Not enough memory resources are available to complete this operation.", "param2", "%%2147942414"},
		"winevt:win-p4siaa0sqco:System:42": {"The iphlpsvc service terminated with the following error: The service cannot be started, either because it is disabled or because it has no enabled devices associated with it.", "param2", "%%1058"},
		// disablestop-eventlog.evtx
		"winevt:desktop-jr78rlp:System:9255": {"The Network List Service service depends on the Network Location Awareness service which failed to start because of the following error: The dependency service or group failed to start.", "param3", "%%1068"},
	}
	seen := 0
	scm, leftover := 0, map[string]int{}
	for _, name := range []string{"omerbenamram-evtx_system.evtx", "disablestop-eventlog.evtx", "ID7000,7009,7045-Payload deployed via service - Tchopper.evtx"} {
		evs, _ := readAll(t, sharedFile(t, name))
		for _, e := range evs {
			if w, ok := want[e.ID]; ok {
				seen++
				if e.Msg != w.msg || e.Fields[w.field+"_insert"] != w.insert || !strings.Contains(e.Fields["strings"].(string), e.Fields[w.field].(string)) {
					t.Errorf("%s (%s): msg %q, %s %q (insert %v)", e.ID, e.Kind, e.Msg, w.field, e.Fields[w.field], e.Fields[w.field+"_insert"])
				}
			}
			if e.Fields["provider"] == "Service Control Manager" {
				scm++
				if i := strings.Index(e.Msg, "%%"); i >= 0 {
					leftover[e.Msg[i:]]++
				}
			}
		}
	}
	if seen != len(want) {
		t.Errorf("found %d of the %d records", seen, len(want))
	}
	// Only references outside the Win32 facility stay (0x8001011F, RPC).
	for ref, n := range leftover {
		if ref != "%%2147549471" {
			t.Errorf("%d Service Control Manager messages keep %q", n, ref)
		}
	}
	t.Logf("%d Service Control Manager events; references left: %v", scm, leftover)
	evs, _ := readAll(t, sharedFile(t, "security_sample.evtx"))
	refs := 0
	for _, e := range evs {
		for k, v := range e.Fields {
			if strings.HasSuffix(k, "_insert") {
				t.Errorf("%s: %s = %v: a Security auditing reference put in words", e.ID, k, v)
			}
			if s, ok := v.(string); ok && strings.HasPrefix(s, "%%") {
				refs++
			}
		}
	}
	if refs == 0 {
		t.Error("security_sample.evtx: no %% reference kept")
	}
}
