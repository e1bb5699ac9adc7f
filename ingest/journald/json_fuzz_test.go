package journald

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"unicode/utf8"
)

// referenceJSON decodes a journalctl -o json line with encoding/json, for
// comparison with the hand-written parseJSON.
func referenceJSON(line []byte) (Entry, bool) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil || raw == nil {
		return Entry{}, false
	}
	var e Entry
	for k, v := range raw {
		if !wantedField([]byte(k)) {
			continue
		}
		val, ok, good := referenceValue(v)
		if !good {
			return Entry{}, false
		}
		if ok {
			e.set(k, val)
		}
	}
	if e.Cursor == "" && e.Realtime.IsZero() && !e.HasMessage {
		return Entry{}, false
	}
	return e, true
}

func referenceValue(v json.RawMessage) (val []byte, ok, good bool) {
	v = bytes.TrimSpace(v)
	switch {
	case bytes.Equal(v, []byte("null")):
		return nil, false, true
	case len(v) > 0 && v[0] == '"':
		var s string
		if json.Unmarshal(v, &s) != nil {
			return nil, false, false
		}
		return []byte(s), true, true
	case len(v) > 0 && v[0] == '[':
		var items []json.RawMessage
		if json.Unmarshal(v, &items) != nil {
			return nil, false, false
		}
		if len(items) == 0 {
			return []byte{}, true, true
		}
		if t := bytes.TrimSpace(items[0]); len(t) > 0 && (t[0] == '"' || t[0] == '[' || t[0] == 'n') {
			return referenceValue(items[0])
		}
		var b []byte
		for _, it := range items {
			n, err := strconv.ParseUint(string(bytes.TrimSpace(it)), 10, 8)
			if err != nil {
				return nil, false, false
			}
			b = append(b, byte(n))
		}
		return b, true, true
	}
	return nil, false, false
}

// parseJSON decodes whatever encoding/json decodes, to the same entry (it
// may be laxer in what it skips).
func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{
		`{"_BOOT_ID":"0123","MESSAGE":null,"__CURSOR":"s=42;i=1","__REALTIME_TIMESTAMP":"1700000000000000"}`,
		`{"MESSAGE":[98,105,110,1,97,114,121,10],"__CURSOR":"s=42;i=2","__REALTIME_TIMESTAMP":"1700000000000000"}`,
		`{"MESSAGE":["multi","value"],"__CURSOR":"s=42;i=3","__REALTIME_TIMESTAMP":"1700000000000000","X":{"a":[1,{"b":null}]}}`,
		`{"MESSAGE":[[99,97,102],[195,169]],"__CURSOR":"s=42;i=3"}`,
		`{"MESSAGE":"tab\there \u00e9 \"q\" \\","_HOSTNAME":"h","_PID":"7","OTHER":[1,2],"N":-1.5e3,"T":true}`,
		` { "MESSAGE" : "x" , "__CURSOR" : "c" } `,
		`{"MESSAGE":"\ud83d\ude00 \ud83d"}`,
		`{}`, `[]`, `{"MESSAGE":}`, `{"MESSAGE":"x",}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		want, ok := referenceJSON(line)
		got, err := parseJSON(line)
		if !ok || !utf8.Valid(line) {
			// (Invalid UTF-8 in a string, which journalctl never prints,
			// is kept as it is, not replaced by U+FFFD.)
			return
		}
		if err != nil {
			t.Fatalf("%q: encoding/json decodes it, parseJSON: %v", line, err)
		}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Fatalf("%q:\n got %+v\nwant %+v", line, got, want)
		}
	})
}

func BenchmarkParseJSON(b *testing.B) {
	line := []byte(`{"_HOSTNAME":"vm","SYSLOG_IDENTIFIER":"nomad","_SYSTEMD_UNIT":"nomad.service","_PID":"4242","__CURSOR":"s=506f42bb7e674c8abf18331b5d8665d8;i=96;b=6b1a2c3d4e5f60718293a4b5c6d7e8f9;m=1a76c5cc0;t=660d3cff97cc0;x=303434d4f69bf0fd","__REALTIME_TIMESTAMP":"1795312703864000","MESSAGE":"    2026-11-22T01:58:23.864Z [DEBUG] client: updated allocations: index=46 total=9 pulled=7 filtered=2","_BOOT_ID":"6b1a2c3d4e5f60718293a4b5c6d7e8f9","__MONOTONIC_TIMESTAMP":"7103864000"}`)
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if _, err := parseJSON(line); err != nil {
			b.Fatal(err)
		}
	}
}
