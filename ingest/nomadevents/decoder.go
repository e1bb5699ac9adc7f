// Package nomadevents reads the Nomad event stream (/v1/event/stream) and
// turns its frames into ingest.Events: one event per distinct change (the
// same change delivered under several topics is emitted once), node,
// allocation, evaluation and deployment status transitions with the previous
// status, and one event per allocation task event, diffed against what was
// emitted before.
//
// The Decoder works on NDJSON frames and serves both the live Source and
// replays of recordings (ReadAll). It decodes only the fields klaxon needs:
// the frame is walked without building maps, large values (Node attributes
// and resources, the Job embedded in allocations) are skipped unread.
package nomadevents

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// seenIndexes is how many distinct frame indexes the duplicate-topic set
// remembers.
const seenIndexes = 64

// logEvery is the minimum time between two log lines about the same problem.
const logEvery = time.Minute

// DecoderConfig configures a Decoder.
type DecoderConfig struct {
	// Identity is the shared node identity map; may be nil (a private one is
	// used). Node payloads teach it node IDs, names and unique.hostname.
	Identity *ingest.Identity
	// Log receives problems (malformed frames, unknown topics); default
	// slog.Default().
	Log *slog.Logger
	// Name names the input in logs and errors (a file name in replays);
	// optional.
	Name string
}

// Stats are the counters of a Decoder.
type Stats struct {
	// Frames counts every frame handed to the decoder, heartbeats and bad
	// frames included.
	Frames int64
	// Heartbeats counts empty frames ({}).
	Heartbeats int64
	// Changes counts distinct changes (Index, Type, Key) emitted.
	Changes int64
	// DuplicateTopics counts changes seen again under another topic and not
	// emitted.
	DuplicateTopics int64
	// TaskEvents counts emitted allocation task events.
	TaskEvents int64
	// Malformed counts frames that are not valid JSON or not frames, and
	// events whose payload could not be decoded.
	Malformed int64
	// Unknown counts events of a topic, type or payload the decoder does not
	// handle.
	Unknown int64
	// Gaps counts detected gaps in the stream (set by the live Source).
	Gaps int64
}

// Events returns the number of events emitted (changes and task events).
func (s Stats) Events() int64 { return s.Changes + s.TaskEvents }

type counters struct {
	frames, heartbeats, changes, dups, taskEvents, malformed, unknown, gaps atomic.Int64
}

// Decoder turns frames into ingest.Events and keeps the state needed for
// transitions and diffs. It is not safe for concurrent use, except Stats and
// Index, which may be called from any goroutine.
type Decoder struct {
	id   *ingest.Identity
	log  *slog.Logger
	name string
	now  func() time.Time
	// kernel is the kernel.name of the nodes whose running allocations
	// are counted (windowsKernel).
	kernel string

	st    counters
	index atomic.Uint64

	// accept, when set, is asked about every frame index before its events
	// are processed; false drops the frame (the Source's resume filter).
	accept func(index uint64, emit func(ingest.Event)) bool
	// resending is set while a frame the server sent again after a
	// reconnect is processed: its known changes are not duplicate topics.
	resending bool

	state

	logMu   sync.Mutex
	lastLog map[string]time.Time

	// scratch
	evBuf   [][]byte
	changes int // allocation updates since the last sweep
}

// NewDecoder returns a Decoder with empty state.
func NewDecoder(cfg DecoderConfig) *Decoder {
	d := &Decoder{
		id:      cfg.Identity,
		log:     cfg.Log,
		name:    cfg.Name,
		now:     time.Now,
		kernel:  windowsKernel,
		lastLog: map[string]time.Time{},
	}
	if d.id == nil {
		d.id = ingest.NewIdentity()
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.state.init()
	return d
}

// Index returns the highest frame index fully processed.
func (d *Decoder) Index() uint64 { return d.index.Load() }

// Stats returns the counters.
func (d *Decoder) Stats() Stats {
	return Stats{
		Frames:          d.st.frames.Load(),
		Heartbeats:      d.st.heartbeats.Load(),
		Changes:         d.st.changes.Load(),
		DuplicateTopics: d.st.dups.Load(),
		TaskEvents:      d.st.taskEvents.Load(),
		Malformed:       d.st.malformed.Load(),
		Unknown:         d.st.unknown.Load(),
		Gaps:            d.st.gaps.Load(),
	}
}

// FrameError describes a frame, or an event of a frame, that was skipped.
type FrameError struct {
	// Index is the frame's index (0 when it could not be read).
	Index uint64
	// Problem is "malformed" or "unknown".
	Problem string
	// Err says what is wrong.
	Err error
}

// Error implements error.
func (e *FrameError) Error() string {
	if e.Index == 0 {
		return fmt.Sprintf("nomadevents: %s frame: %v", e.Problem, e.Err)
	}
	return fmt.Sprintf("nomadevents: frame index %d: %s: %v", e.Index, e.Problem, e.Err)
}

// Unwrap returns the underlying error.
func (e *FrameError) Unwrap() error { return e.Err }

// Frame decodes one NDJSON frame and emits its events. Heartbeats ({}) are
// counted and ignored. A malformed frame (invalid or truncated JSON, not a
// frame) is counted and skipped whole; an event of an unknown topic, type or
// payload, or with a payload that cannot be decoded, is counted and skipped
// while the frame's other events are processed. Both are logged (at most
// once a minute per distinct problem) with the frame's index when it can be
// read, and returned as an error (*FrameError, joined when several); the
// caller goes on with the next frame.
func (d *Decoder) Frame(data []byte, emit func(ingest.Event)) error {
	d.st.frames.Add(1)
	data = bytes.TrimSpace(data)
	if len(data) == 0 || (len(data) == 2 && data[0] == '{' && data[1] == '}') {
		d.st.heartbeats.Add(1)
		return nil
	}
	var (
		index     uint64
		hasIndex  bool
		hasEvents bool
	)
	// One pass over the frame checks it and cuts out its events; nothing is
	// emitted from a frame that turns out to be malformed.
	d.evBuf = d.evBuf[:0]
	end, err := walkMembers(data, 0, func(key []byte, v int) (int, error) {
		switch string(key) {
		case "Index":
			end, err := skipValue(data, v)
			if err != nil {
				return 0, err
			}
			n, err := unum(data[v:end])
			if err != nil {
				return 0, fmt.Errorf("Index: %w", err)
			}
			index, hasIndex = n, true
			return end, nil
		case "Events":
			hasEvents = true
			return walkElements(data, v, func(e int) (int, error) {
				end, err := skipValue(data, e)
				if err == nil {
					d.evBuf = append(d.evBuf, data[e:end])
				}
				return end, err
			})
		}
		return skipValue(data, v)
	})
	if err == nil && skipSpace(data, end) != len(data) {
		err = synErr(end, "data after the frame")
	}
	if err == nil && !hasIndex && !hasEvents {
		// {} with spaces, or an object with neither: a heartbeat.
		d.st.heartbeats.Add(1)
		return nil
	}
	if err == nil && !hasEvents {
		err = errors.New("no Events")
	}
	if err != nil {
		if !hasIndex {
			index = peekIndex(data)
		}
		d.st.malformed.Add(1)
		fe := &FrameError{Index: index, Problem: "malformed", Err: err}
		d.problem("malformed frame ("+problemKey(err)+")", fe, index)
		return fe
	}
	if d.accept != nil && !d.accept(index, emit) {
		return nil
	}
	var errs []error
	for _, ev := range d.evBuf {
		if err := d.event(index, ev, emit); err != nil {
			errs = append(errs, err)
		}
	}
	for i := range d.evBuf {
		d.evBuf[i] = nil
	}
	if index > d.index.Load() {
		d.index.Store(index)
	}
	return errors.Join(errs...)
}

// peekIndex reads the index of a frame that is not valid JSON as a whole
// (e.g. truncated). Nomad writes the frame's members in name order,
// {"Events":[{"FilterKeys":..,"Index":N,..}],"Index":N}, so the frame's own
// Index comes last; the first event's Index, early in the line, is the same.
func peekIndex(data []byte) uint64 {
	head := data[:min(len(data), 4096)]
	i := bytes.Index(head, []byte(`"Index"`))
	if i < 0 {
		return 0
	}
	j := skipSpace(head, i+len(`"Index"`))
	if j >= len(head) || head[j] != ':' {
		return 0
	}
	j = skipSpace(head, j+1)
	k := j
	for k < len(head) && head[k] >= '0' && head[k] <= '9' {
		k++
	}
	n, err := strconv.ParseUint(string(head[j:k]), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// problemKey names a kind of error without its offsets, so that the log
// limit applies per distinct problem.
func problemKey(err error) string {
	var se *syntaxError
	if errors.As(err, &se) {
		return se.msg
	}
	return err.Error()
}

// problem logs a skipped frame or event, once per key per logEvery.
func (d *Decoder) problem(key string, err error, index uint64) {
	now := d.now()
	d.logMu.Lock()
	last, ok := d.lastLog[key]
	if ok && now.Sub(last) < logEvery {
		d.logMu.Unlock()
		return
	}
	if len(d.lastLog) > 256 {
		clear(d.lastLog)
	}
	d.lastLog[key] = now
	d.logMu.Unlock()
	attrs := []any{"index", index, "error", err}
	if d.name != "" {
		attrs = append(attrs, "input", d.name)
	}
	d.log.Warn("nomadevents: skipped "+key+" (logged once a minute)", attrs...)
}

// Known topics and event types (nomad/structs/event.go).
var knownTopics = map[string]bool{
	"Node": true, "Allocation": true, "Evaluation": true, "Deployment": true, "Job": true, "Service": true,
}

var knownTypes = map[string]bool{
	"NodeRegistration": true, "NodeDeregistration": true, "NodeEligibility": true, "NodeDrain": true,
	"NodeStreamEvent": true, "NodeEvent": true,
	"DeploymentStatusUpdate": true, "DeploymentPromotion": true, "DeploymentAllocHealth": true,
	"AllocationCreated": true, "AllocationUpdated": true, "AllocationUpdateDesiredStatus": true,
	"EvaluationUpdated": true, "JobRegistered": true, "JobDeregistered": true, "JobBatchDeregistered": true,
	"PlanResult": true, "ServiceRegistration": true, "ServiceDeregistration": true,
}

// rawEvent is one event of a frame as it stands: its change, and its
// payload with the body of the payload's object (kind).
type rawEvent struct {
	topic, typ, key, kind string
	index                 uint64
	payload, body         []byte
}

// payloadDecoders decode the objects of payloads by kind.
var payloadDecoders = map[string]func(d *Decoder, c change, body []byte, emit func(ingest.Event)) error{
	"Node": (*Decoder).node, "Allocation": (*Decoder).alloc, "Evaluation": (*Decoder).eval,
	"Deployment": (*Decoder).deployment, "Job": (*Decoder).job, "Service": (*Decoder).service,
}

// payloadKind reports whether k names the object of a payload decoded.
func payloadKind(k []byte) bool { return payloadDecoders[string(k)] != nil }

// scanEvent reads an event of a frame without decoding its body.
func scanEvent(raw []byte) (rawEvent, error) {
	var e rawEvent
	_, err := walkMembers(raw, 0, func(k []byte, v int) (int, error) {
		if string(k) == "Payload" && e.topic != "" && e.typ != "" && e.key != "" && e.index != 0 {
			// Nomad writes Payload last: with the change known, the body
			// is decoded where it stands (the decoders read one value and
			// ignore what follows) and the rest of the event, checked by
			// Frame, is not walked again.
			_, err := walkMembers(raw, v, func(pk []byte, pv int) (int, error) {
				if raw[pv] != 'n' && payloadKind(pk) {
					e.kind, e.body = string(pk), raw[pv:]
					return 0, errStop
				}
				return skipValue(raw, pv)
			})
			if err != nil && err != errStop {
				return 0, err
			}
			e.payload = raw[v:]
			return 0, errStop
		}
		if string(k) == "Payload" {
			// {"Allocation": {...}}: the body is cut out in the same pass.
			end, err := walkMembers(raw, v, func(pk []byte, pv int) (int, error) {
				end, err := skipValue(raw, pv)
				if err != nil || e.kind != "" || raw[pv] == 'n' {
					return end, err
				}
				if payloadKind(pk) {
					e.kind, e.body = string(pk), raw[pv:end]
				}
				return end, nil
			})
			if err == nil {
				e.payload = raw[v:end]
			}
			return end, err
		}
		end, err := skipValue(raw, v)
		if err != nil {
			return 0, err
		}
		val := raw[v:end]
		switch string(k) {
		case "Topic":
			e.topic, err = str(val)
		case "Type":
			e.typ, err = str(val)
		case "Key":
			e.key, err = str(val)
		case "Index":
			e.index, err = unum(val)
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %w", k, err)
		}
		return end, nil
	})
	if err == errStop {
		err = nil
	}
	return e, err
}

// event processes one event of a frame.
func (d *Decoder) event(frameIndex uint64, raw []byte, emit func(ingest.Event)) error {
	e, err := scanEvent(raw)
	index, topic, typ, key, kind := e.index, e.topic, e.typ, e.key, e.kind
	if index == 0 {
		index = frameIndex
	}
	if err != nil {
		return d.malformed(index, "event", err)
	}
	if !knownTopics[topic] {
		return d.unknown(index, "topic "+strconv.Quote(topic), fmt.Errorf("unknown topic %q (type %q)", topic, typ))
	}
	if !knownTypes[typ] {
		return d.unknown(index, "type "+strconv.Quote(typ), fmt.Errorf("unknown type %q (topic %q)", typ, topic))
	}
	if e.payload == nil {
		return d.malformed(index, topic+" payload", errors.New("no Payload"))
	}
	if kind == "" {
		return d.unknown(index, "payload of "+topic+"."+typ, fmt.Errorf("no known payload in %s.%s", topic, typ))
	}
	if d.seen(index, typ, key) {
		if !d.resending {
			d.st.dups.Add(1)
		}
		return nil
	}
	c := change{epoch: d.epoch, index: index, typ: typ, key: key, kind: kind + "." + typ}
	if err := payloadDecoders[kind](d, c, e.body, emit); err != nil {
		d.unsee(index, typ, key)
		return d.malformed(index, kind+" payload", err)
	}
	return nil
}

func (d *Decoder) malformed(index uint64, what string, err error) error {
	d.st.malformed.Add(1)
	fe := &FrameError{Index: index, Problem: "malformed", Err: fmt.Errorf("%s: %w", what, err)}
	d.problem("malformed "+what+" ("+problemKey(err)+")", fe, index)
	return fe
}

func (d *Decoder) unknown(index uint64, what string, err error) error {
	d.st.unknown.Add(1)
	fe := &FrameError{Index: index, Problem: "unknown", Err: err}
	d.problem("unknown "+what, fe, index)
	return fe
}

// change identifies the change being decoded.
type change struct {
	epoch uint64
	index uint64
	typ   string
	key   string
	kind  string
}

// objectID is id, or the change's key when the payload had none.
func (c change) objectID(id string) string {
	if id == "" {
		return c.key
	}
	return id
}

func (c change) id() string {
	if c.epoch > 0 {
		return "nomadev:" + strconv.FormatUint(c.epoch, 10) + "." + strconv.FormatUint(c.index, 10) + ":" + c.typ + ":" + c.key
	}
	return "nomadev:" + strconv.FormatUint(c.index, 10) + ":" + c.typ + ":" + c.key
}

// resetIndex starts a new epoch of the server's indexes (its index went
// back): the frames that follow are new whatever their index.
func (d *Decoder) resetIndex() {
	d.epoch++
	d.seenSet = map[uint64]map[string]struct{}{}
	d.seenOrder = nil
	d.index.Store(0)
}

// seen records (index, typ, key) and reports whether it was seen before.
func (d *Decoder) seen(index uint64, typ, key string) bool {
	k := typ + "\x00" + key
	set, ok := d.seenSet[index]
	if !ok {
		set = map[string]struct{}{}
		d.seenSet[index] = set
		d.seenOrder = append(d.seenOrder, index)
		if len(d.seenOrder) > seenIndexes {
			// Forget the lowest index: frames arrive in index order, so it
			// is the oldest.
			lo := 0
			for i, x := range d.seenOrder {
				if x < d.seenOrder[lo] {
					lo = i
				}
			}
			delete(d.seenSet, d.seenOrder[lo])
			d.seenOrder = append(d.seenOrder[:lo], d.seenOrder[lo+1:]...)
		}
	}
	if _, dup := set[k]; dup {
		return true
	}
	set[k] = struct{}{}
	return false
}

func (d *Decoder) unsee(index uint64, typ, key string) {
	if set, ok := d.seenSet[index]; ok {
		delete(set, typ+"\x00"+key)
	}
}

// ReadAll decodes an NDJSON recording of the event stream (a replay),
// emitting events in order. Malformed lines are counted, logged and
// skipped; the error is a read error or ctx's.
func ReadAll(ctx context.Context, r io.Reader, cfg DecoderConfig, emit func(ingest.Event)) (Stats, error) {
	d := NewDecoder(cfg)
	br := bufio.NewReaderSize(r, 256<<10)
	var line []byte
	for n := 0; ; n++ {
		if n%64 == 0 && ctx.Err() != nil {
			return d.Stats(), ctx.Err()
		}
		chunk, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			line = append(line, chunk...)
			continue
		}
		if len(line) > 0 {
			line = append(line, chunk...)
			chunk = line
		}
		if len(chunk) > 0 {
			_ = d.Frame(chunk, emit) // counted and logged by Frame
		}
		line = line[:0]
		if err == io.EOF {
			return d.Stats(), nil
		}
		if err != nil {
			if cfg.Name != "" {
				return d.Stats(), fmt.Errorf("nomadevents: %s: %w", cfg.Name, err)
			}
			return d.Stats(), fmt.Errorf("nomadevents: %w", err)
		}
	}
}

// Detect reports whether head, the start of a file, looks like a recording
// of the event stream: NDJSON lines that are frames ({"Events":[..],"Index":N}
// as Nomad writes them, or {"Index":N,"Events":[..]}) or heartbeats ({}). A last line cut off by the end of head is not judged.
func Detect(head []byte) bool {
	head = bytes.TrimPrefix(head, []byte("\xef\xbb\xbf"))
	frames := 0
	for len(head) > 0 {
		line, rest, complete := bytes.Cut(head, []byte{'\n'})
		head = rest
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if bytes.Equal(line, []byte("{}")) {
			frames++
			continue
		}
		if !looksLikeFrame(line) {
			if !complete && frames > 0 && len(line) < 40 {
				return true // cut too early to tell; earlier lines decided
			}
			return false
		}
		frames++
		if !complete || frames >= 4 {
			return true
		}
	}
	return frames > 0
}

// looksLikeFrame checks the start of a line for a frame: an object whose
// first member is "Events" (an array; Nomad writes members in name order) or
// "Index" (a number).
func looksLikeFrame(line []byte) bool {
	i := skipSpace(line, 0)
	if i >= len(line) || line[i] != '{' {
		return false
	}
	i = skipSpace(line, i+1)
	var name string
	switch {
	case bytes.HasPrefix(line[i:], []byte(`"Events"`)):
		name = `"Events"`
	case bytes.HasPrefix(line[i:], []byte(`"Index"`)):
		name = `"Index"`
	default:
		return false
	}
	i = skipSpace(line, i+len(name))
	if i >= len(line) || line[i] != ':' {
		return false
	}
	i = skipSpace(line, i+1)
	if i >= len(line) {
		return false
	}
	if name == `"Index"` {
		return line[i] >= '0' && line[i] <= '9'
	}
	return line[i] == '[' || line[i] == 'n'
}
