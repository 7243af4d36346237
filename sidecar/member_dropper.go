package sidecar

import (
	"log/slog"
	"sync"

	"github.com/voik/voik/logstore"
	"github.com/voik/voik/sidecar/group"
)

// dropper deletes what committed start markers put below each log's
// start (group.DropToStarts), in the background: off the commit path,
// and on every member alike, the leader too. Readers never see below a
// committed start whether or not it has run (committedView.first); a
// member that stops before it has runs it again from the journal, or the
// base, when it opens.
type dropper struct {
	store  *logstore.Store
	logger *slog.Logger

	mu      sync.Mutex
	pending map[string]uint64
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

func newDropper(store *logstore.Store, logger *slog.Logger) *dropper {
	d := &dropper{store: store, logger: logger, pending: map[string]uint64{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go d.run()
	return d
}

// add asks for subject's records below start to be deleted.
func (d *dropper) add(subject string, start uint64) {
	d.mu.Lock()
	d.pending[subject] = max(d.pending[subject], start)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dropper) run() {
	defer close(d.done)
	for {
		select {
		case <-d.wake:
			d.flush()
		case <-d.stop:
			d.flush()
			return
		}
	}
}

func (d *dropper) flush() {
	d.mu.Lock()
	batch := d.pending
	d.pending = map[string]uint64{}
	d.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := group.DropToStarts(d.store, batch); err != nil {
		d.logger.Error("cannot delete below a committed start; readers do not see those records, and the next open tries again", "err", err)
	}
}

// close deletes what is asked for, then stops.
func (d *dropper) close() {
	close(d.stop)
	<-d.done
}
