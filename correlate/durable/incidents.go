package durable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/internal/backoff"
)

// Incident changes are published without waiting for their
// acknowledgements: the correlator goes on with the next event while the
// servers store them (a synchronous publish waited 5–50 ms behind the
// events being stored, and held every event behind it). What makes this as
// safe as waiting: a checkpoint is the only thing that acks events, and it
// is written only once every change published before it was cut is stored
// (incidentPublisher.await), so a crash before that re-derives the changes
// from the unacked events, with the same Nats-Msg-Id. A change whose
// publish fails is published again until stored; if a later change of the
// same incident was stored meanwhile (it was in flight when the earlier
// one failed), sinks drop the older one (the Dispatcher's supersede
// stage).

// incidentPublishTimeout bounds the wait for one acknowledgement.
const incidentPublishTimeout = 5 * time.Second

// incidentPublisher publishes a correlator's incident changes.
type incidentPublisher struct {
	js     jetstream.JetStream // async publishes, their own acknowledgements
	log    *slog.Logger
	fenced *atomic.Bool
	// inflight are the changes published since the last take, in order.
	inflight []incidentPub
}

// incidentPub is one published change and its acknowledgement to come.
type incidentPub struct {
	msg *nats.Msg
	id  string // the incident's id, for logs
	fut jetstream.PubAckFuture
}

// newIncidentJetStream is the JetStream context incident publishers share:
// at most 4,096 changes unacknowledged, each acknowledged within
// incidentPublishTimeout or failed.
func newIncidentJetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	return jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(incidentPublishTimeout))
}

// publish sends msg (on the correlator's goroutine); it waits only while
// too many changes are unacknowledged.
func (p *incidentPublisher) publish(ctx context.Context, msg *nats.Msg, id string) {
	for {
		// No retries by the library: it would send a change again after
		// later ones (await publishes failed ones again, in order).
		fut, err := p.js.PublishMsgAsync(msg, jetstream.WithRetryAttempts(0))
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) && ctx.Err() == nil && !p.fenced.Load() {
			continue // the library waited for room; try again
		}
		// Without a future (not sent: the connection is closed, say) the
		// checkpoint's wait publishes it again.
		p.inflight = append(p.inflight, incidentPub{msg: msg, id: id, fut: fut})
		return
	}
}

// requeue puts changes a checkpoint could not store back in front of those
// published since, so that the next checkpoint waits for them.
func (p *incidentPublisher) requeue(pubs []incidentPub) {
	if len(pubs) > 0 {
		p.inflight = append(pubs, p.inflight...)
	}
}

// take hands over the changes published so far, for the checkpoint being
// cut to wait for.
func (p *incidentPublisher) take() []incidentPub {
	pubs := p.inflight
	p.inflight = nil
	return pubs
}

// await waits until every change of pubs is stored, publishing again (and
// waiting) those whose publish failed. It gives up only when fenced, or
// after five attempts of one change once ctx is done: the checkpoint is
// then not written, and unstored are the changes from the one that failed
// on (requeue them: a later checkpoint covers their events too).
func (p *incidentPublisher) await(ctx context.Context, pubs []incidentPub) (unstored []incidentPub, err error) {
	for i := range pubs {
		pb := &pubs[i]
		if pb.fut != nil {
			select {
			case <-pb.fut.Ok():
				continue
			case err := <-pb.fut.Err():
				p.log.Warn("incident publish failed; retrying", "incident", pb.id, "err", err)
			}
		}
		if err := p.publishSync(ctx, pb.msg, pb.id); err != nil {
			pubs[i].fut = nil // failed: published again from scratch
			return pubs[i:], err
		}
	}
	return nil, nil
}

// publishSync publishes msg and waits for it to be stored, retrying with
// back-off (cut short once ctx is done).
func (p *incidentPublisher) publishSync(ctx context.Context, msg *nats.Msg, id string) error {
	bo := backoff.New(200*time.Millisecond, 2*time.Second)
	for attempt := 0; ; attempt++ {
		if p.fenced.Load() {
			return errFenced
		}
		pctx, cancel := context.WithTimeout(context.Background(), incidentPublishTimeout)
		_, err := p.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			return nil
		}
		if attempt >= 5 && ctx.Err() != nil {
			return fmt.Errorf("incident %s not stored at shutdown (derived again after restart): %w", id, err)
		}
		p.log.Warn("incident publish failed; retrying", "incident", id, "attempt", attempt+1, "err", err)
		backoff.Sleep(ctx, bo.Next())
	}
}
