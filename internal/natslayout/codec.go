package natslayout

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// EncodeEvent encodes one event as the JSON body of one message. Field
// values JSON cannot represent (NaN, channels, cycles…) are written as their
// fmt %v text rather than failing, and a time outside years 0–9999 is
// dropped, so that a source's event is never lost to its encoding.
func EncodeEvent(ev *ingest.Event) ([]byte, error) {
	b, err := json.Marshal(ev)
	if err == nil {
		return b, nil
	}
	fixed := *ev
	fixed.Commit = nil
	if len(ev.Fields) > 0 {
		fixed.Fields = make(map[string]any, len(ev.Fields))
		for k, v := range ev.Fields {
			if _, err := json.Marshal(v); err != nil {
				v = fmt.Sprintf("%v", v)
			}
			fixed.Fields[k] = v
		}
	}
	if y := ev.Time.Year(); y < 0 || y > 9999 {
		fixed.Time = time.Time{}
	}
	b, err2 := json.Marshal(&fixed)
	if err2 != nil {
		return nil, fmt.Errorf("encode event %q: %w", ev.ID, err)
	}
	return b, nil
}

// DecodeEvent decodes a message body written by EncodeEvent. Numbers in
// Fields decode as float64.
func DecodeEvent(data []byte) (ingest.Event, error) {
	var ev ingest.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return ingest.Event{}, fmt.Errorf("decode event: %w", err)
	}
	return ev, nil
}
