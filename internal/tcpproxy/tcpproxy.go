// Package tcpproxy is a TCP proxy for tests and benchmarks that must take a
// dependency away from the process under test without stopping the shared
// server: Cut resets every connection and refuses new ones, Hang stops
// forwarding without closing anything (a server that no longer answers),
// Restore forwards again.
package tcpproxy

import (
	"fmt"
	"net"
	"sync"
	"testing"
)

// Proxy forwards connections on Addr to a target.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	state  state
	gate   chan struct{} // closed while forwarding; replaced on Hang
	conns  map[net.Conn]struct{}
	closed bool // by Close: cut for good, Hang and Restore do nothing
	wg     sync.WaitGroup
}

type state int

const (
	forwarding state = iota
	cut
	hung
)

// Start listens on a free local port and forwards to target until the test
// ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := Listen(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// Listen listens on a free local port and forwards to target until Close.
func Listen(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tcpproxy: listening: %w", err)
	}
	gate := make(chan struct{})
	close(gate)
	p := &Proxy{ln: ln, target: target, gate: gate, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is where clients connect instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every connection and refuses new ones (each is accepted and
// closed at once, so clients fail fast, as when a server goes away).
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.release()
	p.state = cut
}

// Hang keeps every connection open but forwards nothing, and accepts new
// connections without connecting them: clients wait until their timeouts.
func (p *Proxy) Hang() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return // a gate nobody would open: Close would wait for ever
	}
	if p.state != hung {
		p.gate = make(chan struct{})
	}
	p.state = hung
}

// Restore forwards again; connections held by Hang resume.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.release()
	p.state = forwarding
}

// release opens the gate if Hang closed it. p.mu must be held.
func (p *Proxy) release() {
	if p.state == hung {
		close(p.gate)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		if p.state == cut {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		gate := p.gate
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c, gate)
	}
}

// serve connects c to the target once the gate is open, then copies both
// ways until either side closes.
func (p *Proxy) serve(c net.Conn, gate chan struct{}) {
	defer p.wg.Done()
	defer p.forget(c)
	<-gate // a connection accepted while hung waits like the rest
	p.mu.Lock()
	closed := p.state == cut
	p.mu.Unlock()
	if closed {
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer p.forget(up)
	done := make(chan struct{}, 2)
	go func() { p.copy(up, c); done <- struct{}{} }()
	go func() { p.copy(c, up); done <- struct{}{} }()
	<-done // one side ended: end both
	_ = c.Close()
	_ = up.Close()
	<-done
}

// copy forwards src to dst. What it read, and a close (a read's error,
// which serve passes on by closing both sides), wait at the gate: a hung
// link passes neither, as a network that drops every packet would not;
// once cut, what was held is dropped.
func (p *Proxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if !p.pass() {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or closed: serve closes both sides
		}
	}
}

// pass waits at the gate while the proxy hangs, and reports whether what
// was read goes on: not once the proxy is cut (Cut opens the gate and sets
// its state under p.mu, which pass takes after the gate).
func (p *Proxy) pass() bool {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	<-gate
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state != cut
}

func (p *Proxy) forget(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// Close stops listening, closes every connection (a hung one too) and
// waits until the proxy's goroutines end. A second Close does nothing more.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true // first: no Hang after it closes a gate again
	p.mu.Unlock()
	p.Cut() // opens the gate if hung, so every goroutine ends
	p.wg.Wait()
}
