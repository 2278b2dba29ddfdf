package proxy

import (
	"sync"
	"time"
)

// LimitWait is how long a client over a service's maxConnections waits for
// a session to end before it is refused: long enough for a session whose
// client has just left to finish closing its target (a PostgreSQL backend
// exiting), so that clients that come one after another are not refused.
const LimitWait = 500 * time.Millisecond

// maxWaiting bounds the clients waiting for a slot at once; beyond it a
// client over the limit is refused at once.
const maxWaiting = 64

// Slots counts a service's sessions against its maxConnections. One Slots
// serves every TCPService of a service in turn: across a reload, the old
// service's draining sessions and the new one's count together, so the
// limit holds and the active-connections gauge shows them all.
type Slots struct {
	mu      sync.Mutex
	n       int
	waiting int
	freed   chan struct{} // closed and replaced when a session ends
}

// NewSlots returns an empty count.
func NewSlots() *Slots { return &Slots{freed: make(chan struct{})} }

// acquire takes a slot when fewer than max are taken (max 0: no limit),
// waiting up to wait for one to free, or until stop is closed. It tells
// observe (under the lock, so that counts are told in order) the count
// after taking one.
func (s *Slots) acquire(max int, wait time.Duration, stop <-chan struct{}, observe func(int)) bool {
	var timer *time.Timer
	waited := false
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if waited {
			s.mu.Lock()
			s.waiting--
			s.mu.Unlock()
		}
	}()
	for {
		s.mu.Lock()
		if max <= 0 || s.n < max {
			s.n++
			observe(s.n)
			s.mu.Unlock()
			return true
		}
		if !waited {
			if s.waiting >= maxWaiting || wait <= 0 {
				s.mu.Unlock()
				return false
			}
			s.waiting++
			waited = true
			timer = time.NewTimer(wait)
		}
		freed := s.freed
		s.mu.Unlock()
		select {
		case <-freed:
		case <-timer.C:
			return false
		case <-stop:
			return false
		}
	}
}

// release gives a slot back and tells observe the count.
func (s *Slots) release(observe func(int)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n--
	observe(s.n)
	close(s.freed)
	s.freed = make(chan struct{})
}
