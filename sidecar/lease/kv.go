package lease

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the JetStream key-value bucket holding every group's state,
// one key per group (the group's name). It is the only thing voik creates
// in JetStream.
const Bucket = "VOIK_GROUPS"

// KV is a group's key in Bucket: a Register on JetStream, whose Raft
// orders the compare-and-sets. Get may be answered by a replica that lags
// (direct get); that is safe, as a stale revision only makes a takeover's
// compare-and-set fail, and a revision is never seen before it is written.
type KV struct {
	nc  *nats.Conn
	kv  jetstream.KeyValue
	key string
}

// NewKV opens group's key, creating Bucket if it does not exist with
// replicas copies (0: three, or as many servers as there are if fewer;
// decided when the bucket is created, so a three-server cluster missing a
// server at that moment gets two). A bucket that exists is used as it
// is.
func NewKV(ctx context.Context, nc *nats.Conn, group string, replicas int) (*KV, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = createBucket(ctx, js, replicas)
	}
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
		errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("%w (bucket %s: %v)", ErrNoJetStream, Bucket, err)
	}
	if err != nil {
		return nil, fmt.Errorf("lease: bucket %s: %w", Bucket, err)
	}
	if kv, err = leaderReads(ctx, js, kv); err != nil {
		return nil, fmt.Errorf("lease: bucket %s: %w", Bucket, err)
	}
	return &KV{nc: nc, kv: kv, key: group}, nil
}

// leaderReads turns off direct gets on the bucket's stream, so that every
// Get is answered by the stream's leader, and returns kv bound again. With
// them on, any replica answers, and one that lags (just back from a
// partition, say) returns an old entry: a candidate then waits on a
// revision already replaced, and a leader whose renewal reply was lost
// cannot find its own write and steps down.
//
// It binds again even when it finds them off already: kv may have been
// bound while they were on (another member had just created the bucket
// and not yet turned them off), and such a handle sends its Gets to the
// direct-get subject, which nobody answers once they are off ("no
// responders", for good: a member of make cluster stayed a candidate).
func leaderReads(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) (jetstream.KeyValue, error) {
	stream, err := js.Stream(ctx, "KV_"+Bucket)
	if err != nil {
		return nil, err
	}
	cfg := stream.CachedInfo().Config
	if cfg.AllowDirect {
		cfg.AllowDirect = false
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return nil, err
		}
	}
	return js.KeyValue(ctx, Bucket) // it reads the setting when bound
}

// ErrNoJetStream: the NATS system has no JetStream for this account, so
// a group has nowhere to keep its state.
var ErrNoJetStream = errors.New("JetStream is not enabled on this NATS system (a group keeps its leader and members in a JetStream key-value bucket)")

// Settings stores value as the group's settings under the group's key
// with ".settings" appended, if none are stored, and returns what is
// stored: the first member's. Members compare theirs with it.
func (k *KV) Settings(ctx context.Context, value []byte) ([]byte, error) {
	key := k.key + ".settings"
	if _, err := k.kv.Create(ctx, key, value); err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
		return value, k.mapErr(err)
	}
	e, err := k.kv.Get(ctx, key)
	if err != nil {
		return nil, k.mapErr(err)
	}
	return e.Value(), nil
}

// ChangeSettings replaces the group's stored settings by change(stored),
// by compare-and-set (tried again while others write meanwhile), and
// returns what was stored before.
func (k *KV) ChangeSettings(ctx context.Context, change func(stored []byte) ([]byte, error)) ([]byte, error) {
	key := k.key + ".settings"
	for range 5 {
		e, err := k.kv.Get(ctx, key)
		if err != nil {
			return nil, k.mapErr(err)
		}
		next, err := change(e.Value())
		if err != nil {
			return nil, err
		}
		if _, err := k.kv.Update(ctx, key, next, e.Revision()); err == nil {
			return e.Value(), nil
		} else if !errors.Is(k.mapErr(err), ErrConflict) {
			return nil, k.mapErr(err)
		}
	}
	return nil, fmt.Errorf("lease: the group's settings kept changing under it")
}

func createBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	tries := []int{replicas}
	if replicas <= 0 {
		tries = []int{3, 2, 1}
	}
	var err error
	for _, r := range tries {
		var kv jetstream.KeyValue
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      Bucket,
			Description: "voik replication groups: leader, epoch and in-sync set per group",
			History:     1,
			Replicas:    r,
		})
		if err == nil {
			return kv, nil
		}
		if errors.Is(err, jetstream.ErrBucketExists) {
			return js.KeyValue(ctx, Bucket) // created meanwhile by another member
		}
		if !tooFewServers(err) {
			return nil, err
		}
	}
	return nil, err
}

// tooFewServers says whether err refuses a stream's replicas for want of
// servers: no suitable peers (10005), insufficient resources (10023), or
// replicas in a non-clustered server (10074).
func tooFewServers(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case 10005, 10023, 10074:
		return true
	}
	return false
}

// Key is the group's key in Bucket.
func (k *KV) Key() string { return k.key }

// mapErr turns the client's errors into the Register's.
func (k *KV) mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return ErrNotFound
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionDraining),
		!k.nc.IsConnected():
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// connected fails fast while the connection is down: a request would
// otherwise sit in the reconnect buffer until its context ends.
func (k *KV) connected() error {
	if !k.nc.IsConnected() {
		return fmt.Errorf("%w: NATS connection %s", ErrUnavailable, k.nc.Status())
	}
	return nil
}

// Get implements Register.
func (k *KV) Get(ctx context.Context) ([]byte, uint64, error) {
	if err := k.connected(); err != nil {
		return nil, 0, err
	}
	e, err := k.kv.Get(ctx, k.key)
	if err != nil {
		return nil, 0, k.mapErr(err)
	}
	return e.Value(), e.Revision(), nil
}

// Create implements Register.
func (k *KV) Create(ctx context.Context, value []byte) (uint64, error) {
	if err := k.connected(); err != nil {
		return 0, err
	}
	rev, err := k.kv.Create(ctx, k.key, value)
	return rev, k.mapErr(err)
}

// Update implements Register.
func (k *KV) Update(ctx context.Context, value []byte, last uint64) (uint64, error) {
	if err := k.connected(); err != nil {
		return 0, err
	}
	rev, err := k.kv.Update(ctx, k.key, value, last)
	return rev, k.mapErr(err)
}
