package lease

import (
	"context"
	"errors"
	"sync"
)

// Register is one compare-and-set register: a group's key. Revisions grow
// with every write and are never reused; they need not be consecutive (a
// KV bucket's revisions count the writes of every key in it). The
// JetStream KV (NewKV) is one; a Kubernetes Lease could be another.
type Register interface {
	// Get returns the current value and its revision, or ErrNotFound.
	Get(ctx context.Context) (value []byte, revision uint64, err error)
	// Create writes value if the register has none, or fails with
	// ErrConflict.
	Create(ctx context.Context, value []byte) (revision uint64, err error)
	// Update writes value if the current revision is last, or fails
	// with ErrConflict.
	Update(ctx context.Context, value []byte, last uint64) (revision uint64, err error)
}

var (
	// ErrNotFound: the register holds no value.
	ErrNotFound = errors.New("lease: no group state")
	// ErrConflict: a compare-and-set found another revision.
	ErrConflict = errors.New("lease: revision conflict")
	// ErrUnavailable: the register cannot be reached at all (no NATS
	// connection). A leader steps down at once on it.
	ErrUnavailable = errors.New("lease: register unavailable")
	// ErrNotLeader: the elector does not hold the lead.
	ErrNotLeader = errors.New("lease: not the leader")
)

// Fake is an in-memory Register for tests, with controllable failures. Its
// zero value is empty and ready.
type Fake struct {
	mu     sync.Mutex
	value  []byte
	rev    uint64 // revision of value; 0: none
	seq    uint64 // last revision handed out
	err    error
	lose   bool
	before func(op string)
	after  func(op string)
	// staleValue at staleRev is what Get answers while staleRev is set.
	staleValue []byte
	staleRev   uint64
}

// NewFake returns an empty register.
func NewFake() *Fake { return &Fake{} }

// Fail makes every operation fail with err, without effect, until
// Fail(nil).
func (f *Fake) Fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// LoseReplies makes writes take effect but report ErrLostReply, as when
// a reply is lost on the way back.
func (f *Fake) LoseReplies(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lose = on
}

// ErrLostReply is what a write reports under LoseReplies.
var ErrLostReply = errors.New("lease: fake: reply lost")

// Hooks sets functions called with "get", "create" or "update" before
// an operation takes effect and after, outside the lock (tests advance a
// fake clock in them to model latency). Either may be nil.
func (f *Fake) Hooks(before, after func(op string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.before, f.after = before, after
}

// Bump advances the revision counter by n, as writes to other keys of a
// bucket do.
func (f *Fake) Bump(n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq += n
}

// Put writes s whatever the revision, as someone ignoring the protocol
// would, and returns its revision.
func (f *Fake) Put(s State) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	f.value, f.rev = s.Marshal(), f.seq
	return f.rev
}

// Load returns the stored state and revision (0 if none).
func (f *Fake) Load() (State, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rev == 0 {
		return State{}, 0
	}
	s, err := Unmarshal(f.value)
	if err != nil {
		panic(err)
	}
	return s, f.rev
}

func (f *Fake) op(name string, apply func() (uint64, error)) (uint64, error) {
	f.mu.Lock()
	before, after := f.before, f.after
	f.mu.Unlock()
	if before != nil {
		before(name)
	}
	f.mu.Lock()
	var rev uint64
	err := f.err
	if err == nil {
		rev, err = apply()
		if err == nil && f.lose && name != "get" {
			rev, err = 0, ErrLostReply
		}
	}
	f.mu.Unlock()
	if after != nil {
		after(name)
	}
	return rev, err
}

// ServeStale makes Get answer st at revision rev, as a lagging replica
// answers a direct get, until ServeStale(State{}, 0).
func (f *Fake) ServeStale(st State, rev uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.staleValue, f.staleRev = nil, rev
	if rev != 0 {
		f.staleValue = st.Marshal()
	}
}

// Get implements Register.
func (f *Fake) Get(ctx context.Context) ([]byte, uint64, error) {
	var value []byte
	rev, err := f.op("get", func() (uint64, error) {
		if f.staleRev != 0 {
			value = append([]byte(nil), f.staleValue...)
			return f.staleRev, nil
		}
		if f.rev == 0 {
			return 0, ErrNotFound
		}
		value = append([]byte(nil), f.value...)
		return f.rev, nil
	})
	return value, rev, err
}

// Create implements Register.
func (f *Fake) Create(ctx context.Context, value []byte) (uint64, error) {
	return f.op("create", func() (uint64, error) {
		if f.rev != 0 {
			return 0, ErrConflict
		}
		f.seq++
		f.value, f.rev = append([]byte(nil), value...), f.seq
		return f.rev, nil
	})
}

// Update implements Register.
func (f *Fake) Update(ctx context.Context, value []byte, last uint64) (uint64, error) {
	return f.op("update", func() (uint64, error) {
		if f.rev == 0 || f.rev != last {
			return 0, ErrConflict
		}
		f.seq++
		f.value, f.rev = append([]byte(nil), value...), f.seq
		return f.rev, nil
	})
}
