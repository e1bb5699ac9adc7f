package durable

import (
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Pulling: the correlator's consumer is read one pull request at a time
// (jetstream Fetch), not with nats.go's Messages iterator. The iterator
// keeps two requests in flight and sends the next from a goroutine of its
// own; when the messages of a request arrive and are all taken before that
// goroutine's publish call has returned, the iterator sees "a pull in
// progress", sends nothing more, and waits on an empty subscription until
// its missing-heartbeat timer ends the wait (2 × the heartbeat, 5 s). Under
// load that happened about once a minute (found by BenchmarkLiveSustained
// with p99 latencies of 5–9 s; traced with the server's and the client's
// view of every request). One request at a time has no such window: each
// ends by delivering its batch, by expiring (408), or by its own missing
// heartbeats, and the next is sent then. The channel the loop fills keeps
// the correlator busy meanwhile.
const (
	// pullBatch is how many messages one pull request asks for.
	pullBatch = 512
	// pullExpiry bounds a pull request: a request parked on a server that
	// died (its consumer leader moved) is noticed after two missed
	// heartbeats and made again, instead of after the default 30 s.
	pullExpiry = 5 * time.Second
	// pullHeartbeat is the idle heartbeat a pull request asks for.
	pullHeartbeat = 2 * time.Second
)

// pull delivers cons's messages to msgs, a request at a time, until stop
// is closed; then it closes msgs. Messages it took after stop are not
// delivered (they are not acked, and the next run starts from its
// checkpoint).
func pull(cons jetstream.Consumer, msgs chan<- jetstream.Msg, stop <-chan struct{}, log *slog.Logger) {
	defer close(msgs)
	for {
		select {
		case <-stop:
			return
		default:
		}
		batch, err := cons.Fetch(pullBatch, jetstream.FetchMaxWait(pullExpiry), jetstream.FetchHeartbeat(pullHeartbeat))
		if err != nil {
			// The request was not sent (the connection is closed or
			// reconnecting): try again shortly.
			log.Debug("pull request not sent; trying again", "err", err)
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if !deliver(batch.Messages(), msgs, stop) {
			return
		}
		if err := batch.Error(); err != nil {
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
