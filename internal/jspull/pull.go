// Package jspull reads a JetStream pull consumer one request at a time.
//
// nats.go's Messages iterator (and Consume) keep two requests in flight
// and send the next from a goroutine of their own; when the messages of a
// request arrive and are all taken before that goroutine's publish call
// has returned, the iterator sees "a pull in progress", sends nothing
// more, and waits on an empty subscription until its missing-heartbeat
// timer ends the wait (2 × the heartbeat: 5 s with a 5 s expiry, 30 s by
// default). Under load klaxon's correlator stalled so about once a minute
// (found by BenchmarkLiveSustained with p99 latencies of 5–9 s, traced with
// the server's and the client's view of every request). One request at a
// time (jetstream Fetch) has no such window: each ends by delivering its
// batch, by expiring (408), or by its own missing heartbeats, and the next
// is sent then. The channel Pull fills keeps its reader busy meanwhile.
package jspull

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/internal/backoff"
)

const (
	// Expiry bounds a pull request: a request parked on a server that
	// died (its consumer leader moved) is noticed after two missed
	// heartbeats and made again, instead of after the default 30 s.
	Expiry = 5 * time.Second
	// Heartbeat is the idle heartbeat a pull request asks for.
	Heartbeat = 2 * time.Second
	// retryDelay is the wait before a request that could not be sent is
	// sent again.
	retryDelay = 100 * time.Millisecond
)

// Pull delivers cons's messages to msgs, batch messages a request at a
// time, until ctx ends or the connection is closed; then it closes msgs.
// Messages it took after ctx ended are not delivered (not acked, they are
// delivered again to the next reader of a durable consumer).
func Pull(ctx context.Context, cons jetstream.Consumer, batch int, msgs chan<- jetstream.Msg, log *slog.Logger) {
	defer close(msgs)
	for ctx.Err() == nil {
		req, err := cons.Fetch(batch, jetstream.FetchMaxWait(Expiry), jetstream.FetchHeartbeat(Heartbeat))
		if errors.Is(err, nats.ErrConnectionClosed) {
			log.Debug("pull request not sent: the connection is closed")
			return
		}
		if err != nil {
			// The request was not sent (the connection is reconnecting):
			// try again shortly.
			log.Debug("pull request not sent; trying again", "err", err)
			if !backoff.Sleep(ctx, retryDelay) {
				return
			}
			continue
		}
		if !deliver(req.Messages(), msgs, ctx.Done()) {
			return
		}
		if err := req.Error(); err != nil {
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				log.Debug("no heartbeat from the consumer; pulling again")
			} else {
				log.Debug("pull request ended", "err", err)
			}
		}
	}
}

// deliver moves a batch's messages to msgs until the batch ends (true) or
// stop is closed (false; nats.go ends the batch by itself, its channel
// holds the whole batch).
func deliver(batch <-chan jetstream.Msg, msgs chan<- jetstream.Msg, stop <-chan struct{}) bool {
	for {
		select {
		case m, ok := <-batch:
			if !ok {
				return true
			}
			select {
			case msgs <- m:
			case <-stop:
				return false
			}
		case <-stop:
			return false
		}
	}
}
