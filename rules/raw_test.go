package rules

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
)

// captureRules match lines of the shared captures; every selector has a
// need that MayMatchRaw can check.
const captureRules = `
lists:
  bad_types: [Terminated, "Not Restarting", Restarting]
rules:
  - id: c.task
    match:
      exit1: 'kind == "client.alloc_runner.task_runner" && msg == "Task event" && fields.type == "Terminated" && fields.msg contains "Exit Code: 1"'
      bad: msg == "Task event" && fields.type in lists.bad_types
      notrestarting: lower(msg) contains "not restarting"
    correlate: {window: 10m}
  - id: c.gc
    match:
      marking: kind startsWith "client.gc" && msg contains "marking allocation for GC"
      collected: kind == "client.gc" && lower(msg) startsWith "alloc garbage"
    correlate: {window: 10m}
  - id: c.misc
    match:
      updates: msg startsWith "allocation updates" && fields.updated == "4"
      heartbeat: lower(msg) contains "heartbeat" || lower(fields.error) contains "heartbeat"
      reattach: lower(msg) contains "reattach" && lower(fields.error) contains "reattachment process not found"
      fingerprint: source == "nomad.log" && msg endsWith "fingerprint" && fields.driver == "raw_exec"
    correlate: {window: 10m}
`

func eventFromLine(l nomadlog.Line) *ingest.Event {
	return &ingest.Event{
		ID: "x", Time: l.Time, Node: "n", Source: ingest.SourceNomadLog,
		Kind: l.Logger, Level: l.Level, Msg: l.Msg, Fields: l.Fields,
	}
}

func captureFiles(t *testing.T) []string {
	root := filepath.Join("..", "..", "shared", "testdata", "nomad")
	var files []string
	filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && filepath.Ext(path) == ".log" {
			files = append(files, path)
		}
		return nil
	})
	if len(files) == 0 {
		t.Skip("no capture files under " + root)
	}
	return files
}

// TestMayMatchRawNoFalseNegatives checks on the real agent logs that
// MayMatchRaw is never false for a line whose decoded event matches.
func TestMayMatchRawNoFalseNegatives(t *testing.T) {
	files := captureFiles(t)
	sets := map[string]*Set{
		"capture": mustParse(t, captureRules),
		"good":    mustLoad(t, "testdata/good.yaml"),
		"prop":    mustParse(t, propRules),
	}
	for name, s := range sets {
		s.Logger = slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
		var lines, skipped, matched int
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(bytes.NewReader(data))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				line := sc.Bytes()
				l, err := nomadlog.ParseLine(line)
				if err != nil {
					continue
				}
				lines++
				ev := eventFromLine(l)
				n := 0
				s.Match(ev, func(*Rule, uint64) { n++ })
				if n > 0 {
					matched++
				}
				may := s.MayMatchRaw(line)
				if !s.MayMatchRawSource(ingest.SourceNomadLog, line) {
					if n > 0 {
						t.Errorf("%s: %s: MayMatchRawSource false but the event matches: %s", name, f, line)
					}
				} else if !may {
					t.Errorf("%s: MayMatchRawSource true but MayMatchRaw false: %s", name, line)
				}
				if !may {
					skipped++
					if n > 0 {
						t.Errorf("%s: %s: MayMatchRaw false but the event matches: %s", name, f, line)
					}
				}
			}
		}
		t.Logf("set %s: %d lines, %d matched, %d skipped by MayMatchRaw", name, lines, matched, skipped)
		if name == "capture" && (matched < 50 || skipped < lines/2) {
			t.Errorf("capture set: %d matched, %d of %d skipped: the test proves little", matched, skipped, lines)
		}
		if name == "prop" && skipped != 0 {
			t.Errorf("prop set has need-less selectors, yet MayMatchRaw was false %d times", skipped)
		}
	}
}

func TestMayMatchRawSource(t *testing.T) {
	s := mustParse(t, `
rules:
  - id: w
    match:
      srv: source == "winevt" && kind == "Srv/2020"
      any: source == "winevt"
    correlate: {window: 1m}
`)
	line := []byte(`2024-01-01T00:00:00.000Z [INFO]  client: Srv/2020 happened`)
	if !s.MayMatchRaw(line) {
		t.Error("MayMatchRaw false for a selector without raw needs")
	}
	if s.MayMatchRawSource(ingest.SourceNomadLog, line) {
		t.Error("MayMatchRawSource true for a source no selector wants")
	}
	if !s.MayMatchRawSource(ingest.SourceWinEvt, []byte("x")) {
		t.Error("MayMatchRawSource false for winevt")
	}
}
