package winevt

import (
	"time"

	"github.com/klaxon-dev/klaxon/ingest/winevt/evtxwriter"
)

// seedTime is the time of the first generated record.
var seedTime = time.Date(2024, 3, 5, 10, 0, 0, 123456700, time.UTC)

const (
	msgNoResources = "Insufficient system resources exist to complete the requested service."
	nomadReattach  = ` client.driver_mgr: failed to reattach to plugin, starting new instance: driver=app_pool err="Reattachment process not found"`
	nomadDispense  = `client.driver_mgr: dispensing initial plugin failed: driver=app_pool error="failed to start plugin: failed to launch plugin: pipe: Insufficient system resources exist to complete the requested service."`
)

// seedRecords are the Windows events of seeds 000 and 001, as a Windows
// Nomad client logs them: Srv 2019/2020 (pool empty), the
// Resource-Exhaustion-Detector's 2004, error 1450 as "%%1450" and as text,
// and Nomad's own Application log entries (EventID 2 and 4).
func seedRecords() []evtxwriter.Record {
	t := func(s int) time.Time { return seedTime.Add(time.Duration(s) * time.Second) }
	sys := func(r evtxwriter.Record) evtxwriter.Record {
		r.Computer = "WIN-CLIENT-7.corp.example"
		if r.Channel == "" {
			r.Channel = "System"
		}
		if r.Keywords == 0 {
			r.Keywords = 0x80000000000000
		}
		return r
	}
	return []evtxwriter.Record{
		sys(evtxwriter.Record{ID: 101, Time: t(0), Provider: "Srv", EventID: 2019, Qualifiers: 49152, Level: 2,
			Data: []evtxwriter.NamedData{{Value: "Nonpaged"}}, Binary: []byte{0, 0, 4, 0, 1, 0, 0x54, 0, 0, 0, 0, 0, 0xe3, 7, 0, 0xc0}}),
		sys(evtxwriter.Record{ID: 102, Time: t(5), Provider: "Srv", EventID: 2020, Qualifiers: 49152, Level: 2,
			Data: []evtxwriter.NamedData{{Value: "Paged"}}}),
		sys(evtxwriter.Record{ID: 103, Time: t(10), Provider: "Microsoft-Windows-Resource-Exhaustion-Detector", EventID: 2004, Level: 3,
			Task: 3, Keywords: 0x8000000020000000, ProcessID: 2104, ThreadID: 3340, UserSID: "S-1-5-18",
			Data: []evtxwriter.NamedData{evtxwriter.D("SystemCommitLimit", "17179398144"), evtxwriter.D("SystemCommitCharge", "17113497600"),
				evtxwriter.D("ProcessCommitCharge", "2040000512"), evtxwriter.D("ProcessName1", "nomad.exe"), evtxwriter.D("ProcessId1", "4242")}}),
		sys(evtxwriter.Record{ID: 104, Time: t(12), Provider: "Service Control Manager", EventSourceName: "Service Control Manager",
			EventID: 7000, Qualifiers: 49152, Level: 2, ProcessID: 612, ThreadID: 700,
			Data: []evtxwriter.NamedData{evtxwriter.D("param1", "Nomad"), evtxwriter.D("param2", "%%1450")}}),
		sys(evtxwriter.Record{ID: 105, Time: t(13), Provider: "Service Control Manager", EventSourceName: "Service Control Manager",
			EventID: 7023, Qualifiers: 49152, Level: 2, ProcessID: 612, ThreadID: 700,
			Data: []evtxwriter.NamedData{evtxwriter.D("param1", "Windows Update"), evtxwriter.D("param2", msgNoResources)}}),
		sys(evtxwriter.Record{ID: 106, Time: t(20), Provider: "nomad", EventID: 2, Level: 4, Channel: "Application",
			Data: []evtxwriter.NamedData{{Value: "service ready"}}}),
		sys(evtxwriter.Record{ID: 107, Time: t(21), Provider: "nomad", EventID: 4, Level: 3, Channel: "Application",
			Data: []evtxwriter.NamedData{{Value: nomadReattach + "\n"}}}),
		sys(evtxwriter.Record{ID: 108, Time: t(22), Provider: "nomad", EventID: 4, Level: 2, Channel: "Application",
			Data: []evtxwriter.NamedData{{Value: nomadDispense + "\n"}}}),
	}
}

// writeSeeds writes the seed records into an EVTX file.
func writeSeeds(path string) error {
	w := evtxwriter.New()
	for _, r := range seedRecords() {
		if err := w.Add(r); err != nil {
			return err
		}
	}
	return w.WriteFile(path)
}
