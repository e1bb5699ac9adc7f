package natslayout

import (
	"math"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

func TestSubjects(t *testing.T) {
	cases := []struct{ got, want string }{
		{EventSubject(ingest.SourceNomadLog, "vm"), "klaxon.events.nomad_log.vm"},
		{EventSubject(ingest.SourceWinEvt, "win-client-7"), "klaxon.events.winevt.win-client-7"},
		{EventSubject(ingest.SourceNomadEvent, "10.0.0.7"), "klaxon.events.nomad_event.10_0_0_7"},
		{EventSubject("winevt", "a b\tc*d>e\x00f\x7f"), "klaxon.events.winevt.a_b_c_d_e_f_"},
		{EventSubject("", ""), "klaxon.events._._"},
		{EventSubject("winevt", "ünïcode\u00a0x"), "klaxon.events.winevt.ünïcode_x"},
		{EventSubject("winevt", "bad\xffutf8"), "klaxon.events.winevt.bad_utf8"},
		{IncidentSubject("critical", "nomad.windows.desktop_heap_exhaustion"), "klaxon.incidents.critical.nomad.windows.desktop_heap_exhaustion"},
		{IncidentSubject("warn ing", "a..b.*.>."), "klaxon.incidents.warn_ing.a._.b._._._"},
		{IncidentSubject("", ""), "klaxon.incidents._._"},
		{IncidentSubject("info", ".x"), "klaxon.incidents.info._.x"},
		{DLQSubject("pagerduty"), "klaxon.dlq.pagerduty"},
		{DLQSubject("slack.ops"), "klaxon.dlq.slack_ops"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestCodec(t *testing.T) {
	ev := ingest.Event{ID: "e7", Time: time.Date(2026, 11, 22, 1, 58, 26, 0, time.UTC), Node: "vm", Source: ingest.SourceNomadLog, Kind: "client", Msg: "m"}
	ev.NodeID = "abc"
	ev.Fields = map[string]any{"s": "x", "n": 2.0, "b": true}
	ev.Commit = func() {}
	data, err := EncodeEvent(&ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEvent(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ev.ID || got.NodeID != "abc" || !got.Time.Equal(ev.Time) || got.Fields["n"] != 2.0 || got.Fields["b"] != true || got.Commit != nil {
		t.Errorf("round trip = %+v", got)
	}
	if _, err := DecodeEvent([]byte("{")); err == nil {
		t.Error("bad JSON decoded")
	}

	// Values JSON cannot hold do not lose the event.
	ev.Fields = map[string]any{"nan": math.NaN(), "ch": make(chan int), "ok": "y"}
	ev.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	data, err = EncodeEvent(&ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err = DecodeEvent(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ev.ID || got.Fields["nan"] != "NaN" || got.Fields["ok"] != "y" || !got.Time.IsZero() {
		t.Errorf("lossy round trip = %+v", got)
	}
}
