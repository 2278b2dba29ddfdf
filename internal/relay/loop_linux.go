//go:build linux

package relay

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event loop relay. Two goroutines per session, each parked in the Go
// netpoller between messages, cost the scheduler a wake-up (and often a
// futex call and a context switch) for every message. For a pair of plain
// sockets the relay instead takes the sockets over and serves them from an
// epoll loop: one goroutine waits for events of every session it holds
// (see run), and per message makes one recvfrom and one sendto, as a C proxy such as
// pgbouncer does. Measured with pgbench select-only at 8 clients on the
// 2-core VM, this took the relay from about 23 to 19 us of CPU per
// transaction (pgbouncer: 19), see bench/pg/README.md.
//
// Taking a socket over: the relay duplicates its descriptor and closes the
// net.Conn's own (which removes it from the Go netpoller, which would
// otherwise be woken by the same events), so from then on only the loop
// reads, writes, shuts down and closes it. Closing the net.Conn does
// nothing more to the socket: code that ends a session from outside must
// call Close (below), which ends the relay. A direction that turns into a
// bulk transfer (bulkRun full buffers in a row, both sockets TCP) moves the
// session back onto net.Conns and goroutines, where it splices.

var (
	loopOnce  sync.Once
	loops     []*loop
	loopNext  atomic.Uint32
	loopError error
	loopMoves atomic.Int64 // sessions handed back to goroutines (tests)
)

// loopCount is how many event loops serve sessions: one per four Ps, at
// least one. A busy loop keeps a P to itself, so with few Ps more loops
// would leave the rest of the broker (handshakes, TLS) short of them.
func loopCount() int { return max(1, runtime.GOMAXPROCS(0)/4) }

func pickLoop() (*loop, error) {
	loopOnce.Do(func() {
		for range loopCount() {
			l, err := newLoop()
			if err != nil {
				loopError = err
				return
			}
			loops = append(loops, l)
		}
	})
	if loopError != nil {
		return nil, loopError
	}
	return loops[loopNext.Add(1)%uint32(len(loops))], nil
}

// loop is one epoll instance and the goroutine that serves it.
type loop struct {
	epfd int
	wake int // eventfd: Close and new sessions' aborts wake the loop

	// The loop goroutine's own.
	churn time.Time // when a session last joined or left
	buf   []byte
	sides map[int32]*side

	mu     sync.Mutex // guards the queues, filled by other goroutines
	adds   []*session
	aborts []*session
}

// session is one relayed pair in a loop.
type session struct {
	l     *loop
	ends  [2]*side // client, target
	done  chan struct{}
	err   error // first error; set by the loop before done closes
	moved bool  // handed back to goroutines (bulk); set before done closes
	over  bool  // out of the loop (the loop's own)
	// inLoop: added to the loop (the loop's own); an abort that comes
	// earlier is acted on when the session is added.
	inLoop bool

	aborting atomic.Bool
}

// side is one socket of a session. Fields are the loop's alone.
type side struct {
	s        *session
	peer     *side
	fd       int
	ender    bool // its EOF ends the session (tcp.SessionEnder)
	tcp      bool
	network  string
	local    net.Addr
	remote   net.Addr
	pending  []byte // read from this side, not yet written to peer
	pendBuf  *[]byte
	eof      bool  // read to EOF
	n        int64 // bytes read from this side and written to peer
	full     int   // consecutive full-buffer reads
	interest uint32
	added    bool
}

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	l := &loop{epfd: epfd, wake: wake, buf: make([]byte, BufferSize), sides: map[int32]*side{}}
	go l.run()
	return l, nil
}

// takeOver duplicates e's socket and closes e.io, whose descriptor leaves
// the Go netpoller. It returns the duplicate.
func takeOver(e *end) (int, error) {
	rc, err := e.io.(syscall.Conn).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	_ = e.io.Close()
	return fd, nil
}

// pipeLoop relays c and t (both raw sockets) in an event loop. It returns
// moved when the session is to go on in goroutines, with the ends to use
// (c and t themselves when no loop could be started). release forgets the
// session for Close; the caller runs it when the relay is over.
func pipeLoop(c, t *end) (res Result, moved bool, nc, nt *end, release func()) {
	release = func() {}
	l, err := pickLoop()
	if err != nil {
		return res, true, c, t, release
	}
	sess := &session{l: l, done: make(chan struct{})}
	// Findable by Close before the sockets are taken over: a Close from
	// then on either marks the session (the loop ends it when it arrives)
	// or closes a connection before takeOver, which then fails.
	keys := []net.Conn{c.conn, c.io, t.conn, t.io}
	for _, k := range keys {
		register(k, sess)
	}
	release = func() {
		for _, k := range keys {
			unregister(k)
		}
	}
	var fds [2]int
	for i, e := range []*end{c, t} {
		if fds[i], err = takeOver(e); err != nil {
			if i == 1 {
				_ = unix.Close(fds[0])
			}
			res.Err = err
			return res, false, nil, nil, release
		}
	}
	for i, e := range []*end{c, t} {
		_, isTCP := e.io.(*net.TCPConn)
		sess.ends[i] = &side{s: sess, fd: fds[i], ender: EndsSessionAtEOF(e.conn), tcp: isTCP,
			network: e.raw.network, local: e.raw.local, remote: e.raw.remote}
	}
	sess.ends[0].peer, sess.ends[1].peer = sess.ends[1], sess.ends[0]
	l.add(sess)
	<-sess.done
	res.ClientToTarget, res.TargetToClient = sess.ends[0].n, sess.ends[1].n
	if !sess.moved {
		res.Err = sess.err
		return res, false, nil, nil, release
	}
	// Back onto net.Conns (each a new descriptor in the netpoller).
	loopMoves.Add(1)
	var ends [2]*end
	for i, sd := range sess.ends {
		conn, err := fileConn(sd.fd)
		if err != nil {
			for _, e := range ends[:i] {
				_ = e.io.Close()
			}
			res.Err = err
			return res, false, nil, nil, release
		}
		orig := c.conn
		if i == 1 {
			orig = t.conn
		}
		ends[i] = &end{conn: &movedConn{Conn: conn, orig: orig}, io: conn, raw: newSockIO(conn)}
		ends[i].r, ends[i].w = ends[i].raw, ends[i].raw
	}
	// From here Close finds the moved connections. A Close that came
	// earlier, while the loop was handing the session back, only marked
	// it: closeSession marks under regMu, so it is seen here or finds the
	// moved connections, never neither.
	regMu.Lock()
	for _, k := range keys {
		delete(sessions, k)
		movedTo[k] = [2]net.Conn{ends[0].conn, ends[1].conn}
	}
	aborted := sess.aborting.Load()
	regMu.Unlock()
	if aborted {
		_ = ends[0].conn.Close()
		_ = ends[1].conn.Close()
	}
	return res, true, ends[0], ends[1], release
}

// fileConn makes a net.Conn of a descriptor the loop handed back, closing
// the descriptor.
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "relay")
	defer f.Close()
	return net.FileConn(f)
}

// movedConn is a socket handed back by the loop: it is half-closed and
// closed itself (the wrapper given to Pipe lost its descriptor), and its
// EOF ends the session as the given connection's would.
type movedConn struct {
	net.Conn
	orig net.Conn
}

func (m *movedConn) CloseWrite() error {
	if cw, ok := m.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return m.Conn.Close()
}

func (m *movedConn) EndsSessionAtEOF() bool { return EndsSessionAtEOF(m.orig) }

// The sessions in loops (and those moved back to goroutines), by the
// connections given to Pipe, for Close.
var (
	regMu    sync.Mutex
	sessions = map[net.Conn]*session{}
	movedTo  = map[net.Conn][2]net.Conn{}
)

func register(c net.Conn, s *session) {
	regMu.Lock()
	sessions[c] = s
	regMu.Unlock()
}

func unregister(c net.Conn) {
	regMu.Lock()
	delete(sessions, c)
	delete(movedTo, c)
	regMu.Unlock()
}

// closeSession ends the relay holding c, if any. The session is marked
// under regMu (see pipeLoop's hand-back).
func closeSession(c net.Conn) {
	regMu.Lock()
	s := sessions[c]
	m, moved := movedTo[c]
	if s != nil {
		s.abort()
	}
	regMu.Unlock()
	if moved {
		_ = m[0].Close()
		_ = m[1].Close()
	}
}

// abort asks the loop to end the session (net.ErrClosed, as a close from
// outside gives a relay of net.Conns).
func (s *session) abort() {
	if s.aborting.Swap(true) {
		return
	}
	s.l.mu.Lock()
	s.l.aborts = append(s.l.aborts, s)
	s.l.mu.Unlock()
	s.l.poke()
}

// add hands the session to the loop, which registers its sockets.
func (l *loop) add(s *session) {
	l.mu.Lock()
	l.adds = append(l.adds, s)
	l.mu.Unlock()
	l.poke()
}

// poke wakes the loop to look at its queues.
func (l *loop) poke() {
	one := [8]byte{1}
	_, _ = unix.Write(l.wake, one[:])
}

// fail records the session's first error.
func (s *session) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}

func (l *loop) run() {
	evs := make([]unix.EpollEvent, 128)
	var (
		pf *os.File // a duplicate of epfd in the Go netpoller, while sessions churn
		rc syscall.RawConn
	)
	for {
		churning := time.Since(l.churn) < churnWindow
		switch {
		case churning && pf == nil:
			pf, rc = l.pollFile()
		case !churning && pf != nil:
			// Out of the netpoller, which would otherwise be woken by
			// every event of the loop's sockets.
			_ = pf.Close()
			pf, rc = nil, nil
		}
		var n int
		if pf != nil {
			// Sessions come and go: wait in the Go netpoller and ask
			// epoll only for what is ready. A thread blocked in
			// epoll_wait loses its P to the start-up work of new sessions
			// and gets one back through the scheduler at every wake-up
			// (a short session took 650 us against 380 us here).
			_ = rc.Read(func(fd uintptr) bool {
				var err error
				n, err = unix.EpollWait(int(fd), evs, 0)
				return n > 0 || (err != nil && err != unix.EINTR)
			})
		} else {
			// Steady sessions: block in epoll_wait, the quickest wake-up
			// when nothing else in the process needs the P.
			var err error
			if n, err = unix.EpollWait(l.epfd, evs, -1); err != nil {
				n = 0 // EINTR
			}
		}
		l.serve(evs[:max(n, 0)])
	}
}

// pollFile returns a duplicate of the epoll descriptor as a file in the Go
// netpoller, or nil when it cannot make one (the loop then blocks in
// epoll_wait as in steady times).
func (l *loop) pollFile() (*os.File, syscall.RawConn) {
	fd, err := unix.FcntlInt(uintptr(l.epfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, nil
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, nil
	}
	f := os.NewFile(uintptr(fd), "relay-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, nil
	}
	return f, rc
}

// churnWindow: after a session joins or leaves, the loop waits in the
// netpoller for this long (see run).
const churnWindow = 20 * time.Millisecond

// serve handles one batch of events.
func (l *loop) serve(evs []unix.EpollEvent) {
	for i := range evs {
		fd := evs[i].Fd
		if int(fd) == l.wake {
			l.runQueues()
			continue
		}
		sd := l.sides[fd]
		if sd == nil {
			continue // ended earlier in this batch
		}
		l.handle(sd, evs[i].Events)
	}
}

// runQueues registers new sessions and ends aborted ones.
func (l *loop) runQueues() {
	var b [8]byte
	_, _ = unix.Read(l.wake, b[:])
	l.mu.Lock()
	adds, aborts := l.adds, l.aborts
	l.adds, l.aborts = nil, nil
	l.mu.Unlock()
	for _, s := range adds {
		for _, sd := range s.ends {
			l.sides[int32(sd.fd)] = sd
		}
	}
	if len(adds) > 0 {
		l.churn = time.Now()
	}
	for _, s := range adds {
		s.inLoop = true
		if s.aborting.Load() { // closed while on its way here
			s.fail(net.ErrClosed)
			l.finish(s, false)
			continue
		}
		for _, sd := range s.ends {
			if !s.over {
				l.update(sd)
			}
		}
	}
	for _, s := range aborts {
		// One not yet added is ended when it is (above).
		if s.inLoop && !s.over {
			s.fail(net.ErrClosed)
			l.finish(s, false)
		}
	}
}

// handle serves one event on sd.
func (l *loop) handle(sd *side, events uint32) {
	if sd.peer.pending != nil && events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		if !l.flush(sd.peer) || sd.fd < 0 {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0 && !sd.eof && sd.pending == nil {
		l.readSide(sd)
	}
}

const (
	loopRecvFlags = unix.MSG_DONTWAIT
	loopSendFlags = unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL
)

// readSide reads sd once and writes what it got to its peer.
func (l *loop) readSide(sd *side) {
	var (
		r     uintptr
		errno syscall.Errno
	)
	for {
		r, _, errno = syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(sd.fd),
			uintptr(unsafe.Pointer(&l.buf[0])), uintptr(len(l.buf)), loopRecvFlags, 0, 0)
		if errno != syscall.EINTR {
			break
		}
	}
	switch {
	case errno == syscall.EAGAIN:
		return
	case errno != 0:
		sd.s.fail(sd.opError("read", errno))
		l.finish(sd.s, false)
		return
	case r == 0:
		l.eof(sd)
		return
	}
	nr := int(r)
	if nr == len(l.buf) {
		sd.full++
	} else {
		sd.full = 0
	}
	off := 0
	for off < nr {
		w, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(sd.peer.fd),
			uintptr(unsafe.Pointer(&l.buf[off])), uintptr(nr-off), loopSendFlags, 0, 0)
		switch errno {
		case 0:
			off += int(w)
		case syscall.EINTR:
		case syscall.EAGAIN:
			sd.pendBuf = bufPool.Get().(*[]byte)
			sd.pending = (*sd.pendBuf)[:copy(*sd.pendBuf, l.buf[off:nr])]
			sd.n += int64(off)
			l.update(sd)
			l.update(sd.peer)
			return
		default:
			sd.n += int64(off)
			sd.s.fail(sd.peer.opError("write", errno))
			l.finish(sd.s, false)
			return
		}
	}
	sd.n += int64(nr)
	l.maybeMove(sd)
}

// flush writes sd's pending bytes to its peer; false when the session
// ended.
func (l *loop) flush(sd *side) bool {
	for len(sd.pending) > 0 {
		w, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(sd.peer.fd),
			uintptr(unsafe.Pointer(&sd.pending[0])), uintptr(len(sd.pending)), loopSendFlags, 0, 0)
		switch errno {
		case 0:
			sd.pending = sd.pending[w:]
			sd.n += int64(w)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return true
		default:
			sd.s.fail(sd.peer.opError("write", errno))
			l.finish(sd.s, false)
			return false
		}
	}
	bufPool.Put(sd.pendBuf)
	sd.pending, sd.pendBuf = nil, nil
	l.update(sd)
	l.update(sd.peer)
	if sd.s.over {
		return false
	}
	return l.maybeMove(sd)
}

// maybeMove hands the session back to goroutines when sd's direction has
// become a bulk transfer between TCP sockets; false when it did.
func (l *loop) maybeMove(sd *side) bool {
	if sd.full < bulkRun || !sd.tcp || !sd.peer.tcp || sd.peer.pending != nil {
		return true
	}
	l.finish(sd.s, true)
	return false
}

// eof passes sd's EOF on as a half-close of its peer; the session ends
// when both directions have, or at once when sd ends its session.
func (l *loop) eof(sd *side) {
	sd.eof = true
	if err := unix.Shutdown(sd.peer.fd, unix.SHUT_WR); err != nil && !errors.Is(err, unix.ENOTCONN) {
		var errno syscall.Errno
		_ = errors.As(err, &errno)
		sd.s.fail(sd.peer.opError("shutdown", errno))
		l.finish(sd.s, false)
		return
	}
	if sd.peer.eof || sd.ender {
		l.finish(sd.s, false)
		return
	}
	l.update(sd)
}

// update sets sd's epoll interest: readable while it may be read, writable
// while its peer has bytes waiting for it. A side with no interest leaves
// the epoll set (level-triggered, its error or hang-up would repeat).
func (l *loop) update(sd *side) {
	if sd.s.over {
		return
	}
	var want uint32
	if !sd.eof && sd.pending == nil {
		want |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if sd.peer.pending != nil {
		want |= unix.EPOLLOUT
	}
	if want == sd.interest && sd.added == (want != 0) {
		return
	}
	ev := unix.EpollEvent{Events: want, Fd: int32(sd.fd)}
	var err error
	switch {
	case want == 0:
		err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, sd.fd, nil)
		sd.added = false
	case sd.added:
		err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, sd.fd, &ev)
	default:
		err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, sd.fd, &ev)
		sd.added = true
	}
	sd.interest = want
	if err != nil {
		sd.s.fail(os.NewSyscallError("epoll_ctl", err))
		l.finish(sd.s, false)
	}
}

// finish takes the session out of the loop: its descriptors are closed,
// or, when moving it back to goroutines, left to pipeLoop.
func (l *loop) finish(s *session, move bool) {
	if s.over {
		return // a second failure in the same step (update after update)
	}
	l.churn = time.Now()
	for _, sd := range s.ends {
		delete(l.sides, int32(sd.fd))
	}
	for _, sd := range s.ends {
		if sd.added {
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, sd.fd, nil)
			sd.added = false
		}
		if sd.pendBuf != nil {
			bufPool.Put(sd.pendBuf)
			sd.pending, sd.pendBuf = nil, nil
		}
	}
	s.moved, s.over = move, true
	if !move {
		for _, sd := range s.ends {
			_ = unix.Close(sd.fd)
			sd.fd = -1
		}
	}
	close(s.done)
}

func (sd *side) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: sd.network, Source: sd.local, Addr: sd.remote, Err: os.NewSyscallError(op, errno)}
}
