// Package chaos breaks the links between hub, sites and agents on purpose: a
// TCP proxy that can cut, blackhole, delay and restore a link, so tests can
// count what a partition loses (it should be nothing).
package chaos

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Mode is what the proxy does with traffic.
type Mode int

// Link modes.
const (
	Up        Mode = iota // forward everything
	Cut                   // close every connection and refuse new ones (a clean TCP close)
	Blackhole             // keep connections open but deliver nothing until restored (a silent outage)
)

// Proxy forwards TCP connections from a loopback listener to a target.
type Proxy struct {
	ln     net.Listener
	target string
	dial   func() (net.Conn, error)

	mu      sync.Mutex
	mode    Mode
	latency time.Duration
	jitter  time.Duration
	rate    int // bytes per second each direction, 0 unlimited
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	closed  bool
	changed chan struct{} // closed and replaced on every mode change
}

// NewProxy listens on listen (e.g. 127.0.0.1:0) and forwards to target.
func NewProxy(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, changed: make(chan struct{})}
	p.dial = func() (net.Conn, error) { return net.DialTimeout("tcp", p.target, 2*time.Second) }
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// NewProxyDialer listens on listen and forwards each connection to what
// dial returns, e.g. a connection made inside a network namespace.
func NewProxyDialer(listen string, dial func() (net.Conn, error)) (*Proxy, error) {
	p, err := NewProxy(listen, "")
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.dial = dial
	p.mu.Unlock()
	return p, nil
}

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Set changes the mode. Cut closes every open connection at once.
func (p *Proxy) Set(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
	close(p.changed)
	p.changed = make(chan struct{})
	if m == Cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

// SetLatency delays every chunk forwarded by d (each direction).
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// SetJitter adds a random extra delay in [0, d) to every chunk on top of
// the latency. Chunks stay in order: a link reorders nothing, it only stalls.
func (p *Proxy) SetJitter(d time.Duration) {
	p.mu.Lock()
	p.jitter = d
	p.mu.Unlock()
}

// SetBandwidth limits each direction of each connection to bytesPerSec
// (0 removes the limit).
func (p *Proxy) SetBandwidth(bytesPerSec int) {
	p.mu.Lock()
	p.rate = bytesPerSec
	p.mu.Unlock()
}

// Conns is how many connections (both ends counted once) are open through
// the proxy: a site's leaf uses the member whose proxy has one.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) / 2
}

// Mode is the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Flap alternates the link between Up and down (Cut, or Blackhole if
// blackhole is set) until ctx is done, each period drawn uniformly from
// [minPeriod, maxPeriod) so the link never settles into a rhythm the
// reconnect timers could lock onto. It leaves the link Up and returns how
// many times it went down.
func (p *Proxy) Flap(ctx context.Context, minPeriod, maxPeriod time.Duration, blackhole bool) int {
	down := Cut
	if blackhole {
		down = Blackhole
	}
	n := 0
	defer p.Set(Up)
	for {
		d := minPeriod + time.Duration(rand.Int64N(int64(maxPeriod-minPeriod)+1))
		select {
		case <-ctx.Done():
			return n
		case <-time.After(d):
		}
		if p.Mode() == Up {
			p.Set(down)
			n++
		} else {
			p.Set(Up)
		}
	}
}

func (p *Proxy) state() (Mode, time.Duration, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.latency
	if p.jitter > 0 {
		d += time.Duration(rand.Int64N(int64(p.jitter)))
	}
	return p.mode, d, p.changed
}

func (p *Proxy) bandwidth() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rate
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mode = Cut
	close(p.changed)
	p.changed = make(chan struct{})
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		c.Close()
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if m, _, _ := p.state(); m == Cut {
			c.Close()
			continue
		}
		p.mu.Lock()
		dial := p.dial
		p.mu.Unlock()
		up, err := dial()
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, up) {
			c.Close()
			up.Close()
			return
		}
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies src to dst through a delay line: each chunk is due latency
// (plus jitter) after it was read, never before the chunk ahead of it, and
// leaves no faster than the bandwidth allows. Latency therefore adds delay
// without cutting throughput, as on a real long link. While blackholed the
// bytes are held back, as a dead path does to TCP (which never loses part of
// a stream): either the endpoints give up on the connection, or it resumes
// when restored.
func (p *Proxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	type chunk struct {
		b   []byte
		due time.Time
	}
	line := make(chan chunk, 256)
	go func() {
		defer close(line)
		var last time.Time
		for {
			size := 32 << 10
			if rate := p.bandwidth(); rate > 0 {
				// Small reads keep the pacing smooth at low rates.
				size = max(min(size, rate/50), 512)
			}
			buf := make([]byte, size)
			n, err := src.Read(buf)
			if n > 0 {
				_, lat, _ := p.state()
				due := time.Now().Add(lat)
				if due.Before(last) {
					due = last
				}
				last = due
				line <- chunk{buf[:n], due}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		p.untrack(src, dst)
		for range line { // let the reader finish
		}
	}()
	var free time.Time // when the link can take the next byte
	for c := range line {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		mode, _, changed := p.state()
		for mode == Blackhole {
			<-changed
			mode, _, changed = p.state()
		}
		if mode != Up {
			return
		}
		if rate := p.bandwidth(); rate > 0 {
			now := time.Now()
			if free.Before(now) {
				free = now
			}
			free = free.Add(time.Duration(len(c.b)) * time.Second / time.Duration(rate))
			time.Sleep(time.Until(free))
		}
		if _, err := dst.Write(c.b); err != nil {
			return
		}
	}
}
