package bus

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/internal/backoff"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxPartitions bounds Config.Partitions.
const MaxPartitions = 1024

// Partitioning of KLAXON_EVENTS. With more than one partition the stream
// carries a subject transform (nats-server 2.10+) that maps what ingesters
// publish, klaxon.events.<source>.<node>, to
// klaxon.events.<partition>.<source>.<node>, where <partition> is NATS's
// partition(n, 2) mapping function: FNV-1a of the node token modulo n. So
// every event of one node lands in one partition, whatever its source, and
// ingesters need not know the partition count: the stream maps.

// eventsTransformSrc is the subject shape ingesters publish.
const eventsTransformSrc = natslayout.EventsPrefix + ".*.*"

// eventsTransform is the stream's subject transform for n partitions (nil
// for fewer than 2).
func eventsTransform(n int) *jetstream.SubjectTransformConfig {
	if n < 2 {
		return nil
	}
	return &jetstream.SubjectTransformConfig{
		Source:      eventsTransformSrc,
		Destination: fmt.Sprintf("%s.{{partition(%d,2)}}.{{wildcard(1)}}.{{wildcard(2)}}", natslayout.EventsPrefix, n),
	}
}

// partitionsOf reads the partition count back from a stream's transform
// (1 when it has none).
func partitionsOf(tr *jetstream.SubjectTransformConfig) int {
	if tr == nil || tr.Source != eventsTransformSrc {
		return 1
	}
	d := tr.Destination
	i := strings.Index(d, "partition(")
	if i < 0 {
		return 1
	}
	d = d[i+len("partition("):]
	j := strings.IndexByte(d, ',')
	if j < 0 {
		return 1
	}
	n, err := strconv.Atoi(strings.TrimSpace(d[:j]))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// PartitionOf is the partition of n that NATS maps a node's events to: the
// same FNV-1a hash of the node's subject token that the server's
// partition() mapping function computes.
func PartitionOf(node string, n int) int {
	if n < 2 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(natslayout.Token(node)))
	return int(h.Sum32() % uint32(n))
}

// Partitions returns the number of partitions of KLAXON_EVENTS as the
// stream is configured now.
func (b *Bus) Partitions(ctx context.Context) (int, error) {
	st, err := b.JS.Stream(ctx, natslayout.EventsStream)
	if err != nil {
		return 0, fmt.Errorf("nats: stream %s: %w", natslayout.EventsStream, err)
	}
	return partitionsOf(st.CachedInfo().Config.SubjectTransform), nil
}

// eventsPartitioning decides the events stream's transform: cfg.Partitions
// when set, else the existing stream's.
func (b *Bus) eventsPartitioning(ctx context.Context) (*jetstream.SubjectTransformConfig, error) {
	if b.cfg.Partitions > 0 {
		return eventsTransform(b.cfg.Partitions), nil
	}
	st, err := b.JS.Stream(ctx, natslayout.EventsStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nats: stream %s: %w", natslayout.EventsStream, err)
	}
	return st.CachedInfo().Config.SubjectTransform, nil
}

// checkPartitioning verifies that the server kept the transform asked for:
// nats-server 2.9 silently drops stream subject transforms.
func (b *Bus) checkPartitioning(want *jetstream.SubjectTransformConfig, got *jetstream.StreamInfo) error {
	if want == nil {
		return nil
	}
	if got.Config.SubjectTransform == nil || got.Config.SubjectTransform.Destination != want.Destination {
		return b.partitioningUnsupported(want)
	}
	return nil
}

func (b *Bus) partitioningUnsupported(want *jetstream.SubjectTransformConfig) error {
	return fmt.Errorf("correlator.partitions: %d partitions need stream subject transforms, which nats-server %s does not support (2.10 or later does)",
		partitionsOf(want), b.NC.ConnectedServerVersion())
}

// DefaultLeaseTTL is the TTL of a new KLAXON_LEASES bucket when
// Config.LeaseTTL is not set.
const DefaultLeaseTTL = 10 * time.Second

// ensureLeases makes the KLAXON_LEASES bucket, whose entries disappear when
// they are not written again within its TTL: a lease is held by writing it
// again before it expires. An existing bucket keeps its TTL unless
// Config.LeaseTTL sets another.
func (b *Bus) ensureLeases(ctx context.Context) error {
	ttl := b.cfg.LeaseTTL
	kv, err := b.JS.KeyValue(ctx, natslayout.LeasesBucket)
	switch {
	case err == nil:
		st, err := kv.Status(ctx)
		if err != nil {
			return fmt.Errorf("nats: bucket %s: %w", natslayout.LeasesBucket, err)
		}
		if ttl == 0 || st.TTL() == ttl {
			return nil
		}
	case !errors.Is(err, jetstream.ErrBucketNotFound):
		return fmt.Errorf("nats: bucket %s: %w", natslayout.LeasesBucket, err)
	}
	if ttl == 0 {
		ttl = DefaultLeaseTTL
	}
	_, err = b.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      natslayout.LeasesBucket,
		Description: "klaxon correlator partition leases",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("nats: bucket %s: %w", natslayout.LeasesBucket, err)
	}
	return nil
}

// Leases returns the bucket of partition leases (see ensureLeases).
func (b *Bus) Leases(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := b.JS.KeyValue(ctx, natslayout.LeasesBucket)
	if err != nil {
		return nil, fmt.Errorf("nats: bucket %s: %w", natslayout.LeasesBucket, err)
	}
	return kv, nil
}

// ensureRetrying runs ensure until it succeeds, ctx is done, or it fails
// with an error that waiting does not cure: a cluster that is still
// forming (peers offline, no meta leader yet) or electing stream leaders
// answers with errors for a few seconds, and a sidecar started with the
// cluster should wait for it rather than exit.
func (b *Bus) ensureRetrying(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := b.ensure(ctx)
		if err == nil || !transientJSErr(err) || ctx.Err() != nil {
			return err
		}
		d := reconnectDelay(attempt)
		b.log.Warn("nats: JetStream not ready, retrying", "attempt", attempt, "in", d, "err", b.redact(err))
		if !backoff.Sleep(ctx, d) {
			return fmt.Errorf("%w (while waiting for JetStream: %v)", ctx.Err(), err)
		}
	}
}

// transientJSErr reports JetStream errors of a cluster that is forming or
// electing leaders.
func transientJSErr(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10005, // no suitable peers for placement (peers offline)
			10008: // JetStream system temporarily unavailable
			return true
		}
		return apiErr.Code == 503
	}
	return false
}
