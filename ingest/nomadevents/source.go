package nomadevents

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/ingest/nomadapi"
	"github.com/klaxon-dev/klaxon/internal/backoff"
)

// Defaults of Config.
const (
	DefaultMinBackoff         = 500 * time.Millisecond
	DefaultMaxBackoff         = 30 * time.Second
	DefaultCheckpointInterval = time.Second
	// MaxFrameBytes bounds one frame; longer lines are counted as malformed
	// and skipped.
	MaxFrameBytes = 64 << 20
)

// heartbeatTimeout: Nomad sends a heartbeat frame every 10 s; a stream
// silent for longer than this is a dead connection and is reopened.
var heartbeatTimeout = time.Minute

// KindGap is the Kind of the event a Source emits when it detects a gap in
// the stream.
const KindGap = "klaxon.Gap"

// DefaultTopics are the topics subscribed by default: what the bundled
// rules need.
var DefaultTopics = []string{"Node", "Allocation", "Evaluation", "Deployment", "Job"}

// handledTopics are the topics the decoder understands.
var handledTopics = map[string]bool{
	"Node": true, "Allocation": true, "Evaluation": true, "Deployment": true, "Job": true, "Service": true, "*": true,
}

// TLSConfig configures TLS to the Nomad agent (paths to PEM files); empty
// keys keep Nomad's variables ($NOMAD_CACERT, $NOMAD_CAPATH,
// $NOMAD_CLIENT_CERT, $NOMAD_CLIENT_KEY, $NOMAD_TLS_SERVER_NAME,
// $NOMAD_SKIP_VERIFY).
type TLSConfig = nomadapi.TLS

// Config configures a Source.
type Config struct {
	// Address of the Nomad agent's HTTP API (default $NOMAD_ADDR, else
	// http://127.0.0.1:4646); unix:// names a socket (the task API).
	// Every connection setting starts from nomad/api's DefaultConfig (the
	// NOMAD_* variables the nomad CLI reads) and the fields set here
	// override it.
	Address string
	// Region to stream from (default $NOMAD_REGION, else the agent's).
	Region string
	// Namespace of the Allocation, Evaluation, Deployment, Job and Service
	// events (default $NOMAD_NAMESPACE, else "*": all the token may read).
	Namespace string
	// Token is the ACL token; else the content of TokenFile (trimmed, read
	// again at every reconnect), else $NOMAD_TOKEN.
	Token     ingest.Secret
	TokenFile string
	TLS       TLSConfig
	// Topics are "Topic" or "Topic:key" ("Allocation:*", "Node:<node-id>");
	// default DefaultTopics.
	Topics []string
	// Checkpoints stores the stream index and the decoder's state; may be
	// nil (no persistence: a restart starts from the server's buffer).
	Checkpoints *ingest.Checkpoints
	// Identity is the shared node identity map; may be nil.
	Identity *ingest.Identity
	// MinBackoff and MaxBackoff bound the jittered exponential reconnect
	// delay (defaults 500ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	// CheckpointInterval is the least time between two snapshots of the
	// decoder state while frames keep coming (default 1s); a snapshot is also
	// taken when the stream goes quiet.
	CheckpointInterval time.Duration
}

// SourceStats are the counters of a Source: those of its Decoder (Gaps
// included) and of the connection.
type SourceStats struct {
	Stats
	// Reconnects counts connection attempts after the first.
	Reconnects int64
	// LastIndex is the highest frame index processed.
	LastIndex uint64
	// Resent counts frames the server sent again after a reconnect (the
	// resume index itself), whose known changes were not emitted again.
	Resent int64
	// Stale counts frames below the resume index, dropped.
	Stale int64
	// Resets counts connections whose first frame was below the
	// checkpoint: the server's index went back, and its stream was
	// followed from there.
	Resets int64
	// Seeds counts the times the running allocations of the Windows nodes
	// were read from the agent's API (seed.go).
	Seeds int64
}

// Source streams /v1/event/stream of a Nomad agent. It implements
// ingest.Source.
//
// The connection (address, region, namespace, token, TLS) is made by the
// nomad/api client, but the body is read as raw NDJSON and decoded by the
// Decoder: api's EventStream decodes every payload into map[string]any
// (and then mapstructure), which for frames carrying whole Node and
// Allocation objects costs far more than the few fields klaxon uses.
type Source struct {
	cfg    Config
	log    *slog.Logger
	client *api.Client
	dec    *Decoder
	key    string

	running    atomic.Bool
	reconnects atomic.Int64
	resent     atomic.Int64
	stale      atomic.Int64
	resets     atomic.Int64
	seeded     atomic.Int64

	// seeds is the seeding bookkeeping (seed.go; Run's goroutine only).
	seeds seedState

	// checkpointing
	cpMu         sync.Mutex
	committedSeq uint64
	snaps        []snapshot
	seq          uint64 // of the last frame that emitted events
	snapSeq      uint64 // seq of the last snapshot taken
	snapIndex    uint64
	lastSnap     time.Time
}

type snapshot struct {
	seq   uint64
	index uint64
	state []byte
}

// checkpoint is what a Source stores in ingest.Checkpoints.
type checkpoint struct {
	Index uint64          `json:"index"`
	State json.RawMessage `json:"state,omitempty"`
}

// New validates cfg and returns a Source. Errors name the configuration key.
func New(cfg Config, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.Default()
	}
	var errs []error
	nc := nomadapi.Config{Address: cfg.Address, Region: cfg.Region, Namespace: cfg.Namespace, TLS: cfg.TLS}
	conf := nc.APIConfig() // the NOMAD_* variables, cfg on top
	cfg.Address, cfg.Region, cfg.Namespace = conf.Address, conf.Region, conf.Namespace
	if err := nomadapi.CheckAddress(cfg.Address); err != nil {
		errs = append(errs, fmt.Errorf("nomadevents: address %q: %w", cfg.Address, err))
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "*"
	}
	if len(cfg.Topics) == 0 {
		cfg.Topics = DefaultTopics
	}
	for i, t := range cfg.Topics {
		name, _, _ := strings.Cut(t, ":")
		if strings.Count(t, ":") > 1 || !handledTopics[name] {
			errs = append(errs, fmt.Errorf("nomadevents: topics[%d] %q: want Topic or Topic:key with Topic one of Node, Allocation, Evaluation, Deployment, Job, Service, *", i, t))
		}
	}
	if cfg.MinBackoff < 0 {
		errs = append(errs, fmt.Errorf("nomadevents: min_backoff %s: negative", cfg.MinBackoff))
	}
	if cfg.MaxBackoff < 0 {
		errs = append(errs, fmt.Errorf("nomadevents: max_backoff %s: negative", cfg.MaxBackoff))
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		errs = append(errs, fmt.Errorf("nomadevents: max_backoff %s: below min_backoff %s", cfg.MaxBackoff, cfg.MinBackoff))
	}
	if cfg.CheckpointInterval < 0 {
		errs = append(errs, fmt.Errorf("nomadevents: checkpoint_interval %s: negative", cfg.CheckpointInterval))
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	if !cfg.Token.IsSet() && cfg.TokenFile != "" {
		if _, err := readToken(cfg.TokenFile); err != nil {
			errs = append(errs, fmt.Errorf("nomadevents: token_file: %w", err))
		}
	}
	t := conf.TLSConfig
	for _, f := range []struct{ key, env, path string }{
		{"tls.ca_cert", "NOMAD_CACERT", t.CACert}, {"tls.ca_path", "NOMAD_CAPATH", t.CAPath},
		{"tls.client_cert", "NOMAD_CLIENT_CERT", t.ClientCert}, {"tls.client_key", "NOMAD_CLIENT_KEY", t.ClientKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("nomadevents: %s (or $%s): %w", f.key, f.env, err))
		}
	}
	if (t.ClientCert == "") != (t.ClientKey == "") {
		errs = append(errs, errors.New("nomadevents: tls.client_cert and tls.client_key ($NOMAD_CLIENT_CERT, $NOMAD_CLIENT_KEY): give both or neither"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	nc.Address, nc.Region, nc.Namespace = cfg.Address, cfg.Region, cfg.Namespace
	client, err := nomadapi.NewClient(nc)
	if err != nil {
		return nil, fmt.Errorf("nomadevents: address/tls: %w", err)
	}
	s := &Source{
		cfg:    cfg,
		log:    log,
		client: client,
		key:    "nomadevents:" + cfg.Address,
	}
	s.dec = NewDecoder(DecoderConfig{Identity: cfg.Identity, Log: log, Name: cfg.Address})
	return s, nil
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// token returns the ACL token to send (never logged).
func (s *Source) token() string {
	if s.cfg.Token.IsSet() {
		return s.cfg.Token.Reveal()
	}
	if s.cfg.TokenFile != "" {
		t, err := readToken(s.cfg.TokenFile)
		if err != nil {
			s.log.Error("nomadevents: reading token_file", "path", s.cfg.TokenFile, "error", err)
		}
		return t
	}
	return os.Getenv("NOMAD_TOKEN")
}

// Name identifies the source in logs and metrics.
func (s *Source) Name() string { return "nomadevents:" + s.cfg.Address }

// Stats returns the counters; safe to call while Run runs.
func (s *Source) Stats() SourceStats {
	return SourceStats{
		Stats:      s.dec.Stats(),
		Reconnects: s.reconnects.Load(),
		LastIndex:  s.dec.Index(),
		Resent:     s.resent.Load(),
		Stale:      s.stale.Load(),
		Resets:     s.resets.Load(),
		Seeds:      s.seeded.Load(),
	}
}

// permanentError is an error Run does not retry.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Run streams events into out until ctx is done or a permanent error (the
// agent refused the request: 400, 401, 403, 404), which it returns. It
// never closes out. Network errors, the end of the stream (a leader change,
// an agent restart) and other statuses are retried with jittered
// exponential back-off, reset after every connection that delivered a
// frame.
//
// Resuming: the stream is asked to start at the last index processed N
// (from the checkpoint after a restart). Nomad starts a subscription at the
// first buffered item whose index is >= N, so when N is still in the
// server's event buffer, N comes first again; its changes already emitted
// are recognised by the decoder state and dropped (an index can be spread
// over several frames: those not seen yet are emitted), frames below N are
// dropped.
//
// Gap rule: Nomad gives no signal when the requested index has left its
// buffer (event_buffer_size items); the subscription silently starts at the
// oldest item it still has. After asking for N > 0, the first frame's index
// X tells: X == N means N was still buffered and nothing was lost; X > N+1
// means N was dropped from the buffer (or this agent's buffer never had it)
// and the indexes N+1 … X-1 may have carried changes that were not seen.
// Then an event of Kind "klaxon.Gap" (fields from_index = N+1, to_index = X)
// is emitted and Stats().Gaps counted. Limits: raft indexes without events
// of the subscribed topics are common, so a gap is reported even when
// nothing in between concerned us (false positive, never a false negative
// for a buffer overrun); changing Topics or Namespace between runs makes N
// unmatched by the new subscription and reports a gap too. X == N+1 is never
// a gap. Frames below N (the agent's buffer ends before N, e.g. a lagging
// or restarted server) are dropped and the first frame >= N decides.
func (s *Source) Run(ctx context.Context, out chan<- ingest.Event) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("nomadevents: Run called twice")
	}
	defer s.running.Store(false)
	s.restore()
	defer s.finish()
	s.seeds = seedState{due: true}

	bo := backoff.New(s.cfg.MinBackoff, s.cfg.MaxBackoff)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			s.reconnects.Add(1)
		}
		progress, err := s.stream(ctx, out)
		if ctx.Err() != nil {
			return nil
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			s.log.Error("nomadevents: event stream refused; not retrying", "address", s.cfg.Address, "error", err)
			return perm.err
		}
		if progress {
			bo.Reset()
		}
		wait := bo.Next()
		if err == nil {
			err = io.EOF
		}
		s.log.Warn("nomadevents: event stream ended; reconnecting", "address", s.cfg.Address,
			"error", err, "index", s.dec.Index(), "in", wait.Round(time.Millisecond))
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// restore loads the checkpoint into the decoder.
func (s *Source) restore() {
	if s.cfg.Checkpoints == nil {
		return
	}
	var cp checkpoint
	ok, err := s.cfg.Checkpoints.Get(s.key, &cp)
	if err != nil {
		s.log.Warn("nomadevents: unreadable checkpoint; starting from the server's buffer", "key", s.key, "error", err)
		return
	}
	if !ok {
		return
	}
	if len(cp.State) > 0 {
		if err := s.dec.Restore(cp.State); err != nil {
			s.log.Warn("nomadevents: checkpoint state not restored; transitions start afresh", "error", err)
		}
	}
	s.dec.index.Store(cp.Index)
	s.snapIndex = cp.Index
	s.log.Info("nomadevents: resuming", "address", s.cfg.Address, "index", cp.Index)
}

// finish snapshots the state of the last frame (written once its events
// are committed, possibly after Run returned) and flushes the checkpoints.
func (s *Source) finish() {
	if s.cfg.Checkpoints == nil {
		return
	}
	s.snapshot()
	s.flush()
}

func (s *Source) flush() {
	if s.cfg.Checkpoints == nil {
		return
	}
	if err := s.cfg.Checkpoints.Flush(); err != nil {
		s.log.Error("nomadevents: writing checkpoints", "error", err)
	}
}

// snapshot records the decoder state as of the last processed frame; it is
// stored in the checkpoints once that frame's events are committed.
func (s *Source) snapshot() {
	if s.cfg.Checkpoints == nil {
		return
	}
	idx := s.dec.Index()
	if s.snapSeq == s.seq && s.snapIndex == idx && !s.lastSnap.IsZero() {
		return
	}
	b, err := s.dec.State()
	if err != nil {
		s.log.Error("nomadevents: encoding decoder state", "error", err)
		return
	}
	s.snapSeq, s.snapIndex, s.lastSnap = s.seq, idx, time.Now()
	sn := snapshot{seq: s.seq, index: idx, state: b}
	s.cpMu.Lock()
	// Keep a few pending snapshots: the oldest ones get written first as
	// commits advance; the newest is replaced while commits lag.
	if len(s.snaps) >= 4 {
		s.snaps[len(s.snaps)-1] = sn
	} else {
		s.snaps = append(s.snaps, sn)
	}
	s.cpMu.Unlock()
	s.storeCommitted()
}

// committed records that every event up to the frame seq is committed.
func (s *Source) committed(seq uint64) {
	s.cpMu.Lock()
	if seq > s.committedSeq {
		s.committedSeq = seq
	}
	s.cpMu.Unlock()
	s.storeCommitted()
}

// storeCommitted stores the newest snapshot whose frame is committed.
func (s *Source) storeCommitted() {
	s.cpMu.Lock()
	var best *snapshot
	n := 0
	for i := range s.snaps {
		if s.snaps[i].seq > s.committedSeq {
			break
		}
		best = &s.snaps[i]
		n = i + 1
	}
	var cp checkpoint
	if best != nil {
		cp = checkpoint{Index: best.index, State: best.state}
	}
	s.snaps = append(s.snaps[:0], s.snaps[n:]...)
	s.cpMu.Unlock()
	if best != nil {
		if err := s.cfg.Checkpoints.Set(s.key, cp); err != nil {
			s.log.Error("nomadevents: storing checkpoint", "error", err)
		}
	}
}

// endpoint returns the request path with its query for a resume index.
func (s *Source) endpoint(index uint64) string {
	q := url.Values{}
	if index > 0 {
		q.Set("index", strconv.FormatUint(index, 10))
	}
	for _, t := range s.cfg.Topics {
		q.Add("topic", t)
	}
	return "/v1/event/stream?" + q.Encode()
}

// stream runs one connection. progress reports whether a frame was read.
func (s *Source) stream(ctx context.Context, out chan<- ingest.Event) (progress bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	want := s.dec.Index()
	q := (&api.QueryOptions{AuthToken: s.token()}).WithContext(ctx)
	body, err := s.client.Raw().Response(s.endpoint(want), q)
	if err != nil {
		return false, s.classify(err)
	}
	s.log.Info("nomadevents: streaming", "address", s.cfg.Address, "index", want, "topics", strings.Join(s.cfg.Topics, ","))

	var batch []ingest.Event
	collect := func(ev ingest.Event) { batch = append(batch, ev) }
	// seed runs a seeding due and delivers its events; the state it
	// changed is snapshotted.
	seed := func(why string) error {
		if !s.seeds.due || time.Now().Before(s.seeds.next) {
			return nil
		}
		batch = batch[:0]
		s.seed(ctx, why, collect)
		s.lastSnap = time.Time{}
		return s.deliver(ctx, batch, out)
	}

	lines := make(chan []byte, 16)
	var readErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		readErr = readLines(ctx, body, lines)
	}()
	defer func() {
		cancel()
		body.Close()
		wg.Wait()
	}()

	s.dec.accept = s.resumeFilter(ctx, want)
	defer func() { s.dec.accept, s.dec.resending = nil, false }()

	// The counts of the allocations running before (seed.go), ahead of the
	// first frame.
	why := "start"
	if want > 0 {
		why = "start, resuming"
	}
	if err := seed(why); err != nil {
		return false, err
	}

	idle := time.NewTimer(time.Hour)
	defer idle.Stop()
	quiet := time.NewTimer(heartbeatTimeout)
	defer quiet.Stop()
	flushT := time.NewTicker(time.Second)
	defer flushT.Stop()
	for {
		select {
		case <-ctx.Done():
			return progress, ctx.Err()
		case <-flushT.C:
			s.flush()
			if err := seed("retry"); err != nil {
				return progress, err
			}
		case <-idle.C:
			s.snapshot()
		case <-quiet.C:
			return progress, fmt.Errorf("no frame or heartbeat for %s", heartbeatTimeout)
		case line, ok := <-lines:
			if !ok {
				wg.Wait()
				if readErr == nil || errors.Is(readErr, io.EOF) {
					return progress, errors.New("stream closed by the agent")
				}
				return progress, readErr
			}
			progress = true
			quiet.Reset(heartbeatTimeout)
			batch = batch[:0]
			if line == nil { // oversize, already skipped
				s.dec.st.frames.Add(1)
				s.dec.st.malformed.Add(1)
				s.dec.problem("oversize frame", fmt.Errorf("frame longer than %d bytes", MaxFrameBytes), 0)
				continue
			}
			_ = s.dec.Frame(line, collect) // counted and logged by the decoder
			if err := s.deliver(ctx, batch, out); err != nil {
				return progress, err
			}
			if s.cfg.Checkpoints != nil {
				idle.Reset(100 * time.Millisecond)
			}
		}
	}
}

// commitTogether makes the events of one frame commit as one: the frame
// is committed (its checkpoint may advance) once the last of them is.
func (s *Source) commitTogether(batch []ingest.Event) {
	if len(batch) == 0 || s.cfg.Checkpoints == nil {
		return
	}
	s.seq++
	seq := s.seq
	var left atomic.Int64
	left.Store(int64(len(batch)))
	commit := func() {
		if left.Add(-1) == 0 {
			s.committed(seq)
		}
	}
	for i := range batch {
		batch[i].Commit = commit
	}
}

// resumeFilter is the decoder's accept for a connection resumed at index
// want: the resume filter, reset and gap checks (see Run); a reset or a
// gap seeds the running allocations again (seed.go).
func (s *Source) resumeFilter(ctx context.Context, want uint64) func(index uint64, emit func(ingest.Event)) bool {
	first, warnedStale := true, false
	return func(index uint64, emit func(ingest.Event)) bool {
		s.dec.resending = false
		if first {
			first = false
			switch {
			case want > 0 && index < want:
				s.indexReset(want, index)
				want = 0
				s.seeds.due, s.seeds.next = true, time.Time{}
				s.seed(ctx, "index reset", emit)
				return true
			case want > 0 && index > want+1:
				emit(s.gap(want+1, index))
				s.seeds.due, s.seeds.next = true, time.Time{}
				s.seed(ctx, "gap", emit)
			}
		}
		if index < want {
			s.stale.Add(1)
			if !warnedStale {
				warnedStale = true
				s.log.Warn("nomadevents: frames below the resume index dropped (counted as stale)",
					"address", s.cfg.Address, "index", index, "resume_index", want)
			}
			return false
		}
		if index == want && want > 0 {
			s.dec.resending = true
			s.resent.Add(1)
		}
		return true
	}
}

// deliver sends the events of one frame (or of a seeding), which commit
// together for the checkpoint of the state after it.
func (s *Source) deliver(ctx context.Context, batch []ingest.Event, out chan<- ingest.Event) error {
	s.commitTogether(batch)
	if s.cfg.Checkpoints != nil && time.Since(s.lastSnap) >= s.cfg.CheckpointInterval {
		s.snapshot()
	}
	for _, ev := range batch {
		select {
		case out <- ev:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// indexReset starts over from the server's stream when its first frame
// after a connect is below the checkpoint: the server's index went back (a
// dev agent restarted without its state, a cluster restored from a
// snapshot or rebuilt). Its frames are all new; dropping them as stale
// would leave klaxon blind while it looks healthy.
func (s *Source) indexReset(checkpoint, index uint64) {
	s.resets.Add(1)
	s.log.Warn("nomadevents: the server's event index went backwards (state reset, restored or rebuilt); following its stream from the new index",
		"address", s.cfg.Address, "checkpoint_index", checkpoint, "server_index", index)
	s.dec.resetIndex()
}

// gap builds the event reporting that indexes from..to-1 may be missing.
func (s *Source) gap(from, to uint64) ingest.Event {
	s.dec.st.gaps.Add(1)
	s.log.Warn("nomadevents: event stream gap: the resume index left the server's event buffer",
		"address", s.cfg.Address, "wanted", from, "resumed_at", to)
	return ingest.Event{
		ID:     "nomadev:gap:" + strconv.FormatUint(from, 10) + ":" + strconv.FormatUint(to, 10),
		Time:   time.Now().UTC(),
		Source: ingest.SourceNomadEvent,
		Kind:   KindGap,
		Level:  ingest.LevelWarn,
		Msg: fmt.Sprintf("event stream gap: resumed at index %d, wanted %d; changes in between were not seen",
			to, from),
		Fields: map[string]any{
			"from_index": strconv.FormatUint(from, 10),
			"to_index":   strconv.FormatUint(to, 10),
			"address":    s.cfg.Address,
		},
	}
}

// readLines sends the lines of r to lines (nil for a skipped oversize
// line) until an error, then closes lines.
func readLines(ctx context.Context, r io.Reader, lines chan<- []byte) error {
	defer close(lines)
	br := bufio.NewReaderSize(r, 256<<10)
	var buf []byte
	oversize := false
	for {
		chunk, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if !oversize {
				buf = append(buf, chunk...)
				if len(buf) > MaxFrameBytes {
					oversize, buf = true, nil
				}
			}
			continue
		}
		var line []byte
		send := false
		if oversize {
			send = true
		} else if len(buf)+len(chunk) > 0 {
			line, send = append(buf, chunk...), true
		}
		buf, oversize = nil, false
		if send {
			select {
			case lines <- line:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err != nil {
			return err
		}
	}
}

// classify turns a request error into a permanent error for statuses that
// retrying cannot fix.
func (s *Source) classify(err error) error {
	if nomadapi.Hint(err) != "" {
		return nomadapi.Explain(s.cfg.Address, err) // TLS: says what to check
	}
	var ure api.UnexpectedResponseError
	if !errors.As(err, &ure) || !ure.HasStatusCode() {
		return err
	}
	body := strings.TrimSpace(ure.Body())
	if len(body) > 200 {
		body = body[:200] + "…"
	}
	code := ure.StatusCode()
	head := "nomad event stream: " + strconv.Itoa(code)
	if body != "" {
		head += " " + body
	}
	switch code {
	case 401, 403:
		return &permanentError{fmt.Errorf("%s: the token needs %s", head, s.needs())}
	case 400:
		return &permanentError{fmt.Errorf("%s: the agent rejected the request (topics %s, namespace %q, region %q)",
			head, strings.Join(s.cfg.Topics, ","), s.cfg.Namespace, s.cfg.Region)}
	case 404:
		return &permanentError{fmt.Errorf("%s: no event stream at %s (is it a Nomad agent, with the event broker enabled?)", head, s.cfg.Address)}
	}
	return fmt.Errorf("%s", head)
}

// needs names the ACL capability each subscribed topic requires
// (nomad/stream/event_broker.go aclAllowsSubscription).
func (s *Source) needs() string {
	var node, job, mgmt []string
	for _, t := range s.cfg.Topics {
		name, _, _ := strings.Cut(t, ":")
		switch name {
		case "Node":
			if !contains(node, name) {
				node = append(node, name)
			}
		case "Allocation", "Evaluation", "Deployment", "Job", "Service":
			if !contains(job, name) {
				job = append(job, name)
			}
		default:
			if !contains(mgmt, name) {
				mgmt = append(mgmt, name)
			}
		}
	}
	var parts []string
	plural := func(l []string) string {
		if len(l) == 1 {
			return "topic " + l[0]
		}
		return "topics " + strings.Join(l, ", ")
	}
	if len(node) > 0 {
		parts = append(parts, "node:read for "+plural(node))
	}
	if len(job) > 0 {
		parts = append(parts, fmt.Sprintf("namespace read-job on %q for %s", s.cfg.Namespace, plural(job)))
	}
	if len(mgmt) > 0 {
		parts = append(parts, "a management token for "+plural(mgmt))
	}
	return strings.Join(parts, " and ")
}

// Counters implements ingest.Counted.
func (s *Source) Counters() ingest.Counters {
	st := s.Stats()
	return ingest.Counters{
		ParseErrors: st.Malformed + st.Unknown,
		Stream:      &ingest.StreamCounters{Resets: st.Resets, Gaps: st.Gaps, Stale: st.Stale},
	}
}
