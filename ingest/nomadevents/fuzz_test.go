package nomadevents

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/klaxon-dev/klaxon/ingest"
)

// FuzzFrame: no input makes the decoder panic, and emitted events carry
// string fields only (and job_meta, a map of strings).
func FuzzFrame(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"Index":3,"Events":[{"Topic":"Node","Type":"NodeStreamEvent","Key":"n","Payload":{"Node":{"ID":"n","Name":"vm","Status":"down","Events":[{"Message":"m","Timestamp":"2026-01-01T00:00:00Z"}]}}}]}`))
	f.Add([]byte(allocFrame(5, 5, "Received", "Started", "Terminated")))
	f.Add([]byte(`{"Events":[{"Topic":"Evaluation","Type":"EvaluationUpdated","Key":"e","Index":9,"Payload":{"Evaluation":{"ID":"e","JobID":"j","Status":"blocked","FailedTGAllocs":{"g":{}},"QueuedAllocations":{"g":1}}}}],"Index":9}`))
	f.Add([]byte(`{"Index":2,"Events":[{"Topic":"Job","Type":"JobRegistered","Key":"j","Payload":{"Job":{"ID":"j","Meta":{"team":"a","x\u0000":"b"}}}}]}`))
	f.Add([]byte(`{"Index":1,"Events":[{"Topic":"Service","Type":"ServiceRegistration","Key":"s","Payload":{"Service":{"ServiceName":"x","Port":80}}}]}`))
	for _, name := range captures {
		if b, err := os.ReadFile(filepath.Join(capturesDir, name, "events.ndjson")); err == nil {
			lines := splitLines(b)
			for i := 0; i < len(lines) && i < 8; i++ {
				f.Add(lines[i])
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewDecoder(DecoderConfig{Log: discard})
		emit := func(e ingest.Event) {
			for k, v := range e.Fields {
				if !goodField(k, v) {
					t.Fatalf("field %s = %#v", k, v)
				}
			}
		}
		_ = d.Frame(data, emit)
		_ = d.Frame(data, emit)
		st, err := d.State()
		if err != nil {
			t.Fatal(err)
		}
		if err := NewDecoder(DecoderConfig{Log: discard}).Restore(st); err != nil {
			t.Fatal(err)
		}
		_ = Detect(data)
	})
}

// FuzzSkipValue: every valid JSON value is skipped whole, and the skipper
// never reads past the input (escaped quotes and backslashes included).
func FuzzSkipValue(f *testing.F) {
	for _, s := range []string{`"a\"b"`, `{"k":"v\\"}`, `["0123456789\\\"abcdef", 1, null]`, `{"a":{"b":[true,false]}}`, `"\\\\\\\\\\\\\\\\\""`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		end, err := skipValue(data, 0)
		if json.Valid(data) && len(data) > 0 && !isSpace(data[0]) {
			if err != nil {
				t.Fatalf("valid %q: %v", data, err)
			}
			if skipSpace(data, end) != len(data) {
				t.Fatalf("valid %q: stopped at %d", data, end)
			}
		}
		if err == nil && (end <= 0 || end > len(data)) {
			t.Fatalf("%q: end %d", data, end)
		}
	})
}
