package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
)

// HeaderReplayOf, on a replayed incident change, is the dead letter's
// sequence in the DLQ stream.
const HeaderReplayOf = "Klaxon-Replay-Of"

// DeadLetter is one incident change a sink gave up on.
type DeadLetter struct {
	// Seq is the dead letter's sequence in the KLAXON_DLQ stream (what
	// ReplayDLQ takes).
	Seq uint64 `json:"seq"`
	// Sink is the sink that gave up.
	Sink string `json:"sink"`
	// Error is the sink's last error.
	Error string `json:"error"`
	// Time is when the dispatcher gave up.
	Time time.Time `json:"time"`
	// Attempts is the number of delivery attempts (0: undecodable).
	Attempts int `json:"attempts"`
	// Subject is the incidents subject the change came from.
	Subject string `json:"subject"`
	// IncidentID, Rule, Status and Severity describe the change (empty
	// when it could not be decoded).
	IncidentID string `json:"incident_id"`
	Rule       string `json:"rule"`
	Status     string `json:"status"`
	Severity   string `json:"severity"`
}

func deadLetterOf(seq uint64, h nats.Header, data []byte, stored time.Time) DeadLetter {
	dl := DeadLetter{
		Seq: seq, Sink: h.Get(HeaderSink), Error: h.Get(HeaderError), Subject: h.Get(HeaderSubject), Time: stored,
	}
	if t, err := time.Parse(time.RFC3339Nano, h.Get(HeaderFailedAt)); err == nil {
		dl.Time = t
	}
	dl.Attempts, _ = strconv.Atoi(h.Get(HeaderAttempts))
	var in correlate.Incident
	if json.Unmarshal(data, &in) == nil {
		dl.IncidentID, dl.Rule, dl.Status, dl.Severity = in.ID, in.Rule, in.Status, in.Severity
	}
	return dl
}

// deadLetterMsg is the dead letter of change seq (data, from subject,
// with the HeaderOnlySink only) that sink gave up on at at.
func deadLetterMsg(prefix, sink string, seq uint64, subject string, data []byte, only, reason string, attempts int, at time.Time) *nats.Msg {
	out := nats.NewMsg(prefix + "." + natslayout.Token(sink))
	out.Data = data
	out.Header.Set(HeaderSink, sink)
	out.Header.Set(HeaderError, Truncate(reason, 2000))
	out.Header.Set(HeaderSubject, subject)
	out.Header.Set(HeaderStreamSeq, strconv.FormatUint(seq, 10))
	out.Header.Set(HeaderAttempts, strconv.Itoa(attempts))
	out.Header.Set(HeaderFailedAt, at.UTC().Format(time.RFC3339Nano))
	out.Header.Set(nats.MsgIdHdr, "dlq:"+sink+":"+strconv.FormatUint(seq, 10)+":"+only)
	return out
}

// deadLetter publishes the change to the sink's dead-letter subject and
// acknowledges it; false when the publish failed (the change is NAKed).
func (d *Dispatcher) deadLetter(ctx context.Context, it *item, reason string, attempts int) bool {
	msg := it.msg
	out := deadLetterMsg(d.cfg.DLQPrefix, d.sink.Name(), it.seq, msg.Subject(), msg.Data(), msg.Headers().Get(HeaderOnlySink),
		reason, attempts, d.clock.Now())
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := d.js.PublishMsg(pctx, out); err != nil {
		d.log.Error("dead-letter publish failed; will retry", "err", err)
		_ = msg.NakWithDelay(5 * time.Second)
		return false
	}
	d.dead.Add(1)
	d.ack(msg)
	return true
}

// ListDLQ returns up to limit (≤ 0: all) dead letters of sink, oldest
// first.
func ListDLQ(ctx context.Context, js jetstream.JetStream, sink string, limit int) ([]DeadLetter, error) {
	subj := natslayout.DLQSubject(sink)
	st, err := js.Stream(ctx, natslayout.DLQStream)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	total := info.State.Subjects[subj]
	if total == 0 {
		return nil, nil
	}
	oc, err := js.OrderedConsumer(ctx, natslayout.DLQStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	var out []DeadLetter
	for ctx.Err() == nil {
		want := 256
		if limit > 0 {
			want = min(want, limit-len(out))
		}
		batch, err := oc.FetchNoWait(want)
		if err != nil {
			return out, fmt.Errorf("dlq: %w", err)
		}
		n, done := 0, false
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			out = append(out, deadLetterOf(md.Sequence.Stream, msg.Headers(), msg.Data(), md.Timestamp))
			if md.NumPending == 0 {
				done = true
			}
		}
		if done || n == 0 || (limit > 0 && len(out) >= limit) {
			break
		}
	}
	return out, ctx.Err()
}

// ReplayDLQ re-publishes dead letters of sink (the given DLQ sequences, or
// all when seqs is nil) to the incidents subject they came from, with
// HeaderOnlySink so that only that sink's dispatcher delivers them (the
// others acknowledge them unseen and do not notify twice). A dead letter is
// deleted once JetStream acknowledged its re-publish; the re-publish
// carries a Nats-Msg-Id derived from the dead letter, so running a replay
// again after a crash between the two steps does not publish it twice
// (within the stream's duplicate window). It returns how many were
// replayed.
func ReplayDLQ(ctx context.Context, js jetstream.JetStream, sink string, seqs []uint64) (int, error) {
	subj := natslayout.DLQSubject(sink)
	if seqs == nil {
		list, err := ListDLQ(ctx, js, sink, 0)
		if err != nil {
			return 0, err
		}
		for _, dl := range list {
			seqs = append(seqs, dl.Seq)
		}
	}
	st, err := js.Stream(ctx, natslayout.DLQStream)
	if err != nil {
		return 0, fmt.Errorf("dlq: %w", err)
	}
	n := 0
	var errs []error
	for _, seq := range seqs {
		raw, err := st.GetMsg(ctx, seq)
		if err != nil {
			errs = append(errs, fmt.Errorf("dlq seq %d: %w", seq, err))
			continue
		}
		if raw.Subject != subj {
			errs = append(errs, fmt.Errorf("dlq seq %d: a dead letter of %s, not of sink %q", seq, raw.Subject, sink))
			continue
		}
		orig := raw.Header.Get(HeaderSubject)
		if orig == "" {
			errs = append(errs, fmt.Errorf("dlq seq %d: no %s header", seq, HeaderSubject))
			continue
		}
		target := raw.Header.Get(HeaderSink)
		if target == "" {
			target = sink
		}
		out := nats.NewMsg(orig)
		out.Data = raw.Data
		out.Header.Set(HeaderOnlySink, target)
		out.Header.Set(HeaderReplayOf, strconv.FormatUint(seq, 10))
		out.Header.Set(nats.MsgIdHdr, "replay:"+target+":"+strconv.FormatUint(seq, 10))
		if _, err := js.PublishMsg(ctx, out); err != nil {
			errs = append(errs, fmt.Errorf("dlq seq %d: re-publish: %w", seq, err))
			continue
		}
		if err := st.DeleteMsg(ctx, seq); err != nil {
			errs = append(errs, fmt.Errorf("dlq seq %d: replayed, but not deleted: %w", seq, err))
		}
		n++
	}
	return n, errors.Join(errs...)
}
