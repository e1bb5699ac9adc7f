package replay

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest/journald"
	"github.com/klaxon-dev/klaxon/ingest/journald/journaltest"
)

// sharedRoot is the shared test data for journaltest.Shared.
const sharedRoot = "../../../../shared/testdata"

// incidentKeys renders incident changes for comparison, without the
// evidence's event IDs (file offsets for a log, cursors for a journal).
func incidentKeys(t *testing.T, ins []correlate.Incident) []string {
	t.Helper()
	var out []string
	for _, in := range ins {
		in.Evidence = slices.Clone(in.Evidence)
		for i := range in.Evidence {
			in.Evidence[i].ID = ""
		}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// Replay of a journal file holding an agent's log gives the incidents the
// replay of the log file gives: the journal of one agent (with the
// capture's event stream beside it), and one journal with two agents of two
// hosts. The export and journalctl's JSON of the journal too.
func TestReplayJournalMatchesLog(t *testing.T) {
	jctl, remote := journaltest.Tools(t)
	crash := journaltest.Shared(t, sharedRoot, "nomad/captures/crashloop-gc-checkrestart")
	reconnect := journaltest.Shared(t, sharedRoot, "nomad/captures/reconnect")
	dir := t.TempDir()

	t.Run("one agent", func(t *testing.T) {
		log := filepath.Join(crash, "nomad.log")
		lines := journaltest.Lines(t, log)
		export := journaltest.Export(lines, journaltest.Unit{Hostname: "VM.example.internal", Prefix: "    "})
		file := filepath.Join(dir, "crash.journal")
		journaltest.Write(t, remote, file, export)
		exportFile := filepath.Join(dir, "crash.export")
		jsonFile := filepath.Join(dir, "crash.json")
		if err := os.WriteFile(exportFile, export, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(jsonFile, journaltest.JSON(t, jctl, file), 0o644); err != nil {
			t.Fatal(err)
		}
		events := filepath.Join(crash, "events.ndjson")
		want, wst := replayJSON(t, Options{Node: "vm"}, log, events)
		if len(want) == 0 {
			t.Fatal("the capture gives no incidents")
		}
		for _, in := range []string{file, exportFile, jsonFile} {
			got, st := replayJSON(t, Options{}, in, events)
			if !slices.Equal(incidentKeys(t, got), incidentKeys(t, want)) {
				t.Errorf("%s: %d incident changes differ from the log's %d", filepath.Base(in), len(got), len(want))
			}
			if st.Events != wst.Events {
				t.Errorf("%s: %d events, the log %d", filepath.Base(in), st.Events, wst.Events)
			}
		}
	})

	t.Run("two agents in one journal", func(t *testing.T) {
		vm := filepath.Join(reconnect, "server-and-client-vm.log")
		win := filepath.Join(reconnect, "client-win-client-2.json.log")
		file := filepath.Join(dir, "reconnect.journal")
		journaltest.Write(t, remote, file, journaltest.Export(journaltest.Lines(t, vm), journaltest.Unit{Hostname: "vm", PID: 10, Prefix: "    "}))
		journaltest.Write(t, remote, file, journaltest.Export(journaltest.Lines(t, win), journaltest.Unit{Hostname: "win-client-2", PID: 20, Prefix: "    "}))
		events := filepath.Join(reconnect, "events.ndjson")
		want, _ := replayJSON(t, Options{}, vm, win, events)
		got, _ := replayJSON(t, Options{}, file, events)
		if len(want) == 0 {
			t.Fatal("the capture gives no incidents")
		}
		if !slices.Equal(incidentKeys(t, got), incidentKeys(t, want)) {
			t.Errorf("%d incident changes differ from the logs' %d\n got %q\nwant %q", len(got), len(want), incidentKeys(t, got), incidentKeys(t, want))
		}
	})

	t.Run("detected in a directory", func(t *testing.T) {
		in, err := ExpandInputs([]string{dir})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range in {
			names = append(names, filepath.Base(p))
		}
		if want := []string{"crash.export", "crash.journal", "crash.json", "reconnect.journal"}; !slices.Equal(names, want) {
			t.Errorf("inputs of the directory %q, want %q", names, want)
		}
		for name, kind := range map[string]string{"crash.export": journald.ExportFormat.Name, "crash.journal": journald.JournalFileFormat.Name, "crash.json": journald.JSONFormat.Name} {
			in, err := openFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			in.close()
			if in.format.Name != kind {
				t.Errorf("%s: kind %q, want %q", name, in.format.Name, kind)
			}
		}
	})
}
