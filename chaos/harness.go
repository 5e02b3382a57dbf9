package chaos

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/streams"
)

// BuildTags are the tags every build of the module needs (the podman
// bindings); the harness builds the real binary with them.
const BuildTags = "remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp"

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds ./cmd/alpha once per test process and returns its path.
// ALPHA_BIN points at a prebuilt binary instead (make builds bin/alpha).
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("ALPHA_BIN"); p != "" {
			buildPath, buildErr = filepath.Abs(p)
			return
		}
		dir, err := os.MkdirTemp("", "alpha-chaos-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "alpha")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-tags", BuildTags, "-o", buildPath, "./cmd/alpha")
		cmd.Dir = filepath.Dir(filepath.Dir(file))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/alpha: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// CleanupBinary removes the binary Binary built (call it from TestMain
// after m.Run).
func CleanupBinary() {
	if buildPath != "" && os.Getenv("ALPHA_BIN") == "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
}

// Proc is one process of the real binary that the test started. Only these
// are ever signalled, by PID.
type Proc struct {
	Name string
	t    testing.TB
	bin  string
	args []string
	env  []string
	wrap []string // command prefix, e.g. ip netns exec NS
	log  string
	// ready is the line an incarnation logs once it listens; Restart
	// waits for it to retry a port another process took meanwhile.
	ready string

	mu    sync.Mutex
	cmd   *exec.Cmd
	lines []string
	done  chan struct{}
}

// Start runs the binary with args; its stderr goes to DIR/NAME.log and is
// scanned for WaitLog. The process is stopped in t.Cleanup.
func Start(t testing.TB, dir, name string, args ...string) *Proc {
	return StartWrapped(t, dir, name, nil, nil, args...)
}

// StartWrapped is Start with a command prefix (ip netns exec NS) and extra
// environment.
func StartWrapped(t testing.TB, dir, name string, wrap, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, t: t, bin: Binary(t), args: args, env: env, wrap: wrap, log: filepath.Join(dir, name+".log")}
	p.start()
	t.Cleanup(p.Stop)
	return p
}

func (p *Proc) start() {
	p.t.Helper()
	argv := append(append(append([]string{}, p.wrap...), p.bin), p.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), "ALPHA_LOG=info"), p.env...)
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		p.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, w
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.Name, err)
	}
	w.Close()
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.lines = cmd, done, nil
	p.mu.Unlock()
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(f, line)
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
		}
		r.Close()
	}()
	go func() {
		cmd.Wait()
		// A process's last lines (why it exited) are in lines before it
		// counts as gone: a caller that sees it stopped reads them. A
		// grandchild still holding the pipe must not hold this forever.
		select {
		case <-scanned:
		case <-time.After(5 * time.Second):
		}
		f.Close()
		close(done)
	}()
}

// PID is the process id of the current incarnation.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Running reports whether the current incarnation is alive.
func (p *Proc) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// WaitLog waits for a log line containing substr (in this incarnation) and
// returns it.
func (p *Proc) WaitLog(substr string, timeout time.Duration) string {
	p.t.Helper()
	line, err := p.waitLine(substr, timeout)
	if err != nil {
		p.t.Fatalf("%v; log %s:\n%s", err, p.log, p.tail())
	}
	return line
}

// waitLine is WaitLog returning an error: the process exited or the time
// ran out before the line came.
func (p *Proc) waitLine(substr string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.Contains(l, substr) {
				p.mu.Unlock()
				return l, nil
			}
		}
		done := p.done
		p.mu.Unlock()
		select {
		case <-done:
			// The scanner may still hold the last lines: look once more.
			time.Sleep(50 * time.Millisecond)
			if l := p.lastLine(substr); l != "" {
				return l, nil
			}
			return "", fmt.Errorf("%s exited before logging %q", p.Name, substr)
		default:
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not log %q within %v", p.Name, substr, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *Proc) lastLine(substr string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// SetArg replaces the value that follows flag in the arguments of the next
// incarnation: a restarted server keeps the port its first one bound.
func (p *Proc) SetArg(flag, value string) {
	for i, a := range p.args {
		if a == flag && i+1 < len(p.args) {
			p.args[i+1] = value
			return
		}
	}
	p.args = append(p.args, flag, value)
}

// Lines is a copy of this incarnation's log lines.
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lines)
}

// CountLog counts this incarnation's log lines containing substr.
func (p *Proc) CountLog(substr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// LogSpan is the time= of the first and the last line containing substr
// in this incarnation.
func (p *Proc) LogSpan(substr string) (first, last time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if !strings.Contains(l, substr) {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, LogField(l, "time"))
		if err != nil {
			continue
		}
		if first.IsZero() {
			first = ts
		}
		last = ts
	}
	return first, last
}

func (p *Proc) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := max(0, len(p.lines)-30)
	return strings.Join(p.lines[n:], "\n")
}

// Signal sends sig to the current incarnation.
func (p *Proc) Signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(sig)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	p.Signal(syscall.SIGKILL)
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	<-done
}

// Stop sends SIGTERM, then SIGKILL after 10 s, and waits. Idempotent.
func (p *Proc) Stop() {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return
	default:
	}
	p.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}

// Restart starts the process again with the same arguments (after Stop or
// Kill), so on the ports its first incarnation bound. Should another
// process have taken one in between ("address already in use"), it tries
// again for a while; any other failure is left to the caller's WaitLog.
func (p *Proc) Restart() {
	p.t.Helper()
	p.Stop()
	for attempt := 1; ; attempt++ {
		p.start()
		if p.ready == "" {
			return
		}
		_, err := p.waitLine(p.ready, 90*time.Second)
		if err == nil || attempt == 20 || p.Running() || !strings.Contains(p.tail(), "address already in use") {
			return
		}
		p.t.Logf("%s: a port is taken, restarting again (attempt %d)", p.Name, attempt)
		time.Sleep(250 * time.Millisecond)
	}
}

// Footprint is a process's resident memory and CPU time so far.
type Footprint struct {
	RSS  int64         // bytes
	Anon int64         // bytes of RSS that are anonymous: heap and stacks, not the mapped binary
	CPU  time.Duration // user + system
}

// Usage reads /proc for the current incarnation.
func (p *Proc) Usage() (Footprint, error) { return ProcUsage(p.PID()) }

// ProcUsage reads RSS and CPU time of pid from /proc.
func ProcUsage(pid int) (Footprint, error) {
	var f Footprint
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return f, err
	}
	// Fields after the command name, which may hold spaces.
	s := string(st)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 22 {
		return f, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	sy, _ := strconv.ParseInt(fields[12], 10, 64)
	f.CPU = time.Duration(ut+sy) * time.Second / 100 // USER_HZ is 100 on Linux
	pages, _ := strconv.ParseInt(fields[21], 10, 64)
	f.RSS = pages * int64(os.Getpagesize())
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return f, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			f.Anon = kb << 10
		}
	}
	return f, nil
}

var kvRE = regexp.MustCompile(`(\w+)=("[^"]*"|\S+)`)

// LogField returns key=value from a slog text line.
func LogField(line, key string) string {
	for _, m := range kvRE.FindAllStringSubmatch(line, -1) {
		if m[1] == key {
			return strings.Trim(m[2], `"`)
		}
	}
	return ""
}

// Hub is one `alpha hub` process (a standalone hub or a cluster member).
type Hub struct {
	*Proc
	ClientURL string // tls://127.0.0.1:PORT (nats:// when Insecure)
	LeafAddr  string // 127.0.0.1:PORT
	RouteAddr string // 127.0.0.1:PORT, cluster members only (the bound one)
	Prod      *Prod  // nil when Insecure
}

// HubSpec says how to start a hub.
type HubSpec struct {
	Name    string
	Cluster bool     // run as a cluster member
	Routes  []string // where the other members' routes answer, HOST:PORT
	// Insecure runs the hub with --insecure (no TLS, accounts or
	// signatures), as the dev stack does. The default is production mode.
	Insecure bool
	// Prod is the operator and PKI to use; cluster members share one.
	// StartHub makes one when it is nil (and not Insecure).
	Prod *Prod
	// Args are more `alpha hub` flags, e.g. --rebalance-every.
	Args []string
}

// StartHub runs `alpha hub` and waits for "hub ready" (a cluster member:
// only until its route listener is up; call WaitReady once every member
// runs). By default the hub runs in production mode: operator mode with the
// tenant Tenant, TLS on the client and leafnode listeners. Every listener
// binds a port of its own choosing (-1); the harness reads the bound
// addresses from the log and pins them for restarts.
func StartHub(t testing.TB, dir string, spec HubSpec) *Hub {
	t.Helper()
	if spec.Name == "" {
		spec.Name = "hub"
	}
	args := []string{"hub", "--name", spec.Name, "--store", filepath.Join(dir, spec.Name),
		"--listen", "127.0.0.1:-1", "--leaf-listen", "127.0.0.1:-1"}
	h := &Hub{}
	if spec.Insecure {
		args = append(args, "--insecure")
	} else {
		if spec.Prod == nil {
			spec.Prod = NewProd(t, dir)
		}
		h.Prod = spec.Prod
		args = append(args, "--operator-dir", h.Prod.Op.Dir, "--tls-cert", h.Prod.TLS.Cert, "--tls-key", h.Prod.TLS.Key)
	}
	if spec.Cluster {
		var routes []string
		for _, r := range spec.Routes {
			routes = append(routes, "nats-route://"+r)
		}
		args = append(args, "--cluster", "127.0.0.1:-1", "--routes", strings.Join(routes, ","))
		if h.Prod != nil {
			// Routes take only members whose certificate the CA signed.
			args = append(args, "--tls-ca", h.Prod.TLS.CA)
		}
	}
	args = append(args, spec.Args...)
	h.Proc = Start(t, dir, spec.Name, args...)
	h.ready = "hub ready"
	if spec.Cluster {
		// A member is ready only once the cluster has a meta leader, so
		// the next member needs this one's route port before that: the
		// server's own listening line has it.
		line := h.WaitLog("Listening for route connections on ", 60*time.Second)
		h.RouteAddr = LogField(line, "msg")[strings.LastIndex(LogField(line, "msg"), " ")+1:]
		h.SetArg("--cluster", h.RouteAddr)
		return h
	}
	h.WaitReady(60 * time.Second)
	return h
}

// WaitReady waits for "hub ready", reads the bound addresses from it and
// keeps them for the next incarnation.
func (h *Hub) WaitReady(timeout time.Duration) {
	h.t.Helper()
	line := h.WaitLog("hub ready", timeout)
	h.ClientURL = LogField(line, "clients")
	h.LeafAddr = strings.TrimPrefix(LogField(line, "leafnodes"), "nats-leaf://")
	u, err := url.Parse(h.ClientURL)
	if err != nil || u.Port() == "" || h.LeafAddr == "" {
		h.t.Fatalf("%s: no bound addresses in %q", h.Name, line)
	}
	h.SetArg("--listen", u.Host)
	h.SetArg("--leaf-listen", h.LeafAddr)
}

// ConnOptions authenticate a client of the hub: the tenant administrator
// over TLS (none when Insecure).
func (h *Hub) ConnOptions() []nats.Option {
	if h.Prod == nil {
		return nil
	}
	return h.Prod.HubOptions(h.t)
}

// StartHubCluster runs n members in production mode and waits until all
// are ready (the buckets are created R3 once a meta leader exists). A
// member must be given its routes when it starts, before the others have
// bound their route ports: so each member is reached through an in-process
// proxy that listens from the start and forwards to the member's port once
// the member reports it.
func StartHubCluster(t testing.TB, dir string, n int) []*Hub {
	t.Helper()
	return StartHubClusterProd(t, dir, n, NewProd(t, dir))
}

// StartHubClusterProd is StartHubCluster with an operator and PKI made
// beforehand (NewProd), e.g. with the tenant's limits raised for a large
// fleet (Prod.Op.SetTenant) before the members load them; nil runs the
// members with --insecure. args are more flags for every member.
func StartHubClusterProd(t testing.TB, dir string, n int, prod *Prod, args ...string) []*Hub {
	t.Helper()
	targets := make([]atomic.Pointer[string], n)
	proxies := make([]*Proxy, n)
	for i := range n {
		p, err := NewProxyDialer("127.0.0.1:0", func() (net.Conn, error) {
			addr := targets[i].Load()
			if addr == nil {
				return nil, fmt.Errorf("hub%d has no route port yet", i+1)
			}
			return net.DialTimeout("tcp", *addr, 2*time.Second)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		proxies[i] = p
	}
	var hubs []*Hub
	for i := range n {
		var routes []string
		for j, p := range proxies {
			if j != i {
				routes = append(routes, p.Addr())
			}
		}
		h := StartHub(t, dir, HubSpec{Name: fmt.Sprintf("hub%d", i+1), Cluster: true, Routes: routes, Prod: prod, Insecure: prod == nil, Args: args})
		targets[i].Store(&h.RouteAddr)
		hubs = append(hubs, h)
	}
	for _, h := range hubs {
		h.WaitReady(90 * time.Second)
	}
	return hubs
}

// Site is a site leaf and its agents, each its own process unless
// OneProcess, with its uplink to every hub member through its own Proxy.
type Site struct {
	ID, Node  string // Node is the first of Nodes
	Nodes     []string
	Root      string // the first node's agent --root
	Roots     map[string]string
	ClientURL string // the leaf's client URL (agents, telemetry publishers)
	Links     []*Proxy
	Leaf      *Proc            // the leaf, or the single `alpha site` process
	Agent     *Proc            // the first node's agent; nil when OneProcess
	Agents    map[string]*Proc // every node's agent; empty when OneProcess
	Bundle    string           // the site bundle from `alpha site add`; "" when Insecure
}

// SiteSpec says how to start a site.
type SiteSpec struct {
	ID, Node   string
	Nodes      []string // several nodes, one agent process each (default: Node)
	OneProcess bool     // `alpha site` (leaf and agent in one process)
	Direct     bool     // no proxies: connect straight to the hubs
	// Insecure runs leaf and agents with --insecure; the hubs must be
	// Insecure too.
	Insecure bool
	// Bundle is a bundle already issued and registered (AddSite); empty:
	// StartSite runs `alpha site add` itself.
	Bundle string
}

// StartSite runs a site against hubs. In production mode (the default) it
// first issues and registers the site's bundle with `alpha site add`, then
// runs the leaf with the bundle and the hub's CA and each agent with its
// node's key and the trusted publisher keys, as the README's "Going to
// production" does. It waits until the leaf listens.
func StartSite(t testing.TB, dir string, hubs []*Hub, spec SiteSpec) *Site {
	t.Helper()
	prod := hubs[0].Prod
	if spec.Insecure != (prod == nil) {
		t.Fatalf("site %s: Insecure=%v but the hub's Insecure=%v", spec.ID, spec.Insecure, prod == nil)
	}
	nodes := spec.Nodes
	if len(nodes) == 0 {
		nodes = []string{cmp.Or(spec.Node, "n1")}
	}
	if spec.OneProcess && len(nodes) > 1 {
		t.Fatalf("site %s: OneProcess runs one node, not %v", spec.ID, nodes)
	}
	s := &Site{ID: spec.ID, Node: nodes[0], Nodes: nodes, Roots: map[string]string{}, Agents: map[string]*Proc{}}
	for _, n := range nodes {
		s.Roots[n] = filepath.Join(dir, spec.ID, n, "root")
	}
	s.Root = s.Roots[s.Node]
	var urls []string
	for _, h := range hubs {
		addr := h.LeafAddr
		if !spec.Direct {
			p, err := NewProxy("127.0.0.1:0", h.LeafAddr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			s.Links = append(s.Links, p)
			addr = p.Addr()
		}
		urls = append(urls, "nats-leaf://"+addr)
	}
	sec := []string{"--insecure"}
	if prod != nil {
		s.Bundle = spec.Bundle
		if s.Bundle == "" {
			s.Bundle = filepath.Join(dir, spec.ID, "bundle")
			Run(t, AddSiteArgs(dir, hubs, spec.ID, nodes...)...)
		}
		sec = []string{"--bundle", s.Bundle, "--tls-ca", prod.TLS.CA}
	}
	store := filepath.Join(dir, spec.ID, "leaf")
	hubArg := strings.Join(urls, ",")
	state := func(n string) string { return filepath.Join(dir, spec.ID, n, "agent") }
	if spec.OneProcess {
		s.Leaf = Start(t, dir, spec.ID, append([]string{"site", "--site", spec.ID, "--node", s.Node, "--hub", hubArg,
			"--store", store, "--listen", "127.0.0.1:-1", "--root", s.Root, "--state", state(s.Node)}, sec...)...)
	} else {
		s.Leaf = Start(t, dir, spec.ID+"-leaf", append([]string{"leaf", "--site", spec.ID, "--hub", hubArg,
			"--store", store, "--listen", "127.0.0.1:-1"}, sec...)...)
	}
	s.Leaf.ready = "leaf ready"
	line := s.Leaf.WaitLog("leaf ready", 60*time.Second)
	s.ClientURL = LogField(line, "clients")
	u, err := url.Parse(s.ClientURL)
	if err != nil || u.Port() == "" {
		t.Fatalf("site %s: no bound client address in %q", spec.ID, line)
	}
	// A restarted leaf keeps its port: its agents reconnect to it.
	s.Leaf.SetArg("--listen", u.Host)
	if spec.OneProcess {
		return s
	}
	for _, n := range nodes {
		args := []string{"agent", "--site", spec.ID, "--node", n, "--nats", s.ClientURL, "--root", s.Roots[n], "--state", state(n)}
		if prod == nil {
			args = append(args, "--insecure")
		} else {
			// The leaf's client listener is loopback only, without TLS,
			// as in the README's single-machine walkthrough.
			args = append(args, "--creds", filepath.Join(s.Bundle, accounts.AgentSeedFile(n)),
				"--trusted-keys", filepath.Join(s.Bundle, accounts.TrustedKeysFile))
		}
		s.Agents[n] = Start(t, dir, spec.ID+"-"+n, args...)
	}
	s.Agent = s.Agents[s.Node]
	return s
}

// AddSiteArgs are the arguments of `alpha site add` that issue a site's
// bundle into DIR/SITE/bundle and register the site at the hubs, as the
// tenant's administrator over TLS.
func AddSiteArgs(dir string, hubs []*Hub, site string, nodes ...string) []string {
	var urls []string
	for _, h := range hubs {
		urls = append(urls, h.ClientURL)
	}
	p := hubs[0].Prod
	return []string{"site", "add", site, "--operator-dir", p.Op.Dir, "--tenant", Tenant, "--nodes", strings.Join(nodes, ","),
		"--hub", strings.Join(urls, ","), "--tls-ca", p.TLS.CA, "--out", filepath.Join(dir, site, "bundle")}
}

// SetLinks sets every uplink proxy of the site to m.
func (s *Site) SetLinks(m Mode) {
	for _, p := range s.Links {
		p.Set(m)
	}
}

// Key is the site's first node key in the blueprints and status buckets.
func (s *Site) Key() string { return s.ID + "." + s.Node }

// NodeOptions authenticate a client at the site's leaf as a node's agent
// (its nkey from the bundle, its inbox prefix): what a process on the node
// may do there. None when Insecure.
func (s *Site) NodeOptions(t testing.TB, node string) []nats.Option {
	t.Helper()
	if s.Bundle == "" {
		return nil
	}
	opts, err := accounts.AgentOptions(s.ID, node, filepath.Join(s.Bundle, accounts.AgentSeedFile(node)))
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

// Conn connects to url with retries suited to a test that restarts servers.
func Conn(t testing.TB, url string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond),
		nats.RetryOnFailedConnect(true), nats.Timeout(3 * time.Second)}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Blueprint is a blueprint of n files whose content carries gen, so a node's
// files say which revision it runs.
func Blueprint(gen, n int) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: alpha/v1\nkind: Blueprint\nmetadata:\n  name: chaos\nspec:\n  files:\n")
	for i := range max(n, 1) {
		fmt.Fprintf(&b, "    - path: /etc/chaos/f%03d.conf\n      content: |\n        gen=%d file=%d\n      mode: \"0644\"\n", i, gen, i)
	}
	return []byte(b.String())
}

// AppliedGen reads the generation of file i at a node's root (0 if absent).
func AppliedGen(root string, i int) int {
	b, err := os.ReadFile(filepath.Join(root, "etc", "chaos", fmt.Sprintf("f%03d.conf", i)))
	if err != nil {
		return 0
	}
	var gen, file int
	fmt.Sscanf(string(b), "gen=%d file=%d", &gen, &file)
	return gen
}

// NodeStatus is the part of an agent's status the chaos checks read.
type NodeStatus struct {
	AppliedRevision uint64 `json:"appliedRevision"`
	DesiredRevision uint64 `json:"desiredRevision"`
	Phase           string `json:"phase"`
}

// Signer wraps a blueprint for a node key as agents accept it; nil stores
// it as it is (insecure).
type Signer func(key string, blueprint []byte) ([]byte, error)

// Put writes a blueprint at the hub, signed by sign, retrying while the hub
// (or its meta leader) is not there, and returns the revision. Every
// attempt is signed afresh: should a lost reply hide a stored attempt, the
// next one still carries a higher sequence.
func Put(ctx context.Context, js jetstream.JetStream, key string, data []byte, sign Signer) (uint64, error) {
	// Short attempts: a request sent while the client reconnects, or
	// before a new stream leader is elected, may never be answered.
	return putAttempts(ctx, 3*time.Second, key, data, sign, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.KeyValue(ctx, streams.BlueprintsBucket)
	})
}

// PutKV is Put through a bucket handle already bound, with attempts of
// at most attempt: no stream info is asked for, which, in a cluster whose
// blueprints stream leader just died, goes unanswered until a new leader
// is elected, where a put is refused at once and tried again.
func PutKV(ctx context.Context, kv jetstream.KeyValue, key string, data []byte, sign Signer, attempt time.Duration) (uint64, error) {
	return putAttempts(ctx, attempt, key, data, sign, func(context.Context) (jetstream.KeyValue, error) { return kv, nil })
}

func putAttempts(ctx context.Context, attempt time.Duration, key string, data []byte, sign Signer,
	bucket func(context.Context) (jetstream.KeyValue, error)) (uint64, error) {
	var last error
	for ctx.Err() == nil {
		value := data
		if sign != nil {
			var err error
			if value, err = sign(key, data); err != nil {
				return 0, err
			}
		}
		actx, cancel := context.WithTimeout(ctx, attempt)
		kv, err := bucket(actx)
		if err == nil {
			var rev uint64
			if rev, err = kv.Put(actx, key, value); err == nil {
				cancel()
				return rev, nil
			}
		}
		cancel()
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return 0, errors.Join(ctx.Err(), last)
}

// Status reads a node's status as the hub sees it (the hub's status
// bucket, sourced from the sites).
func Status(ctx context.Context, hub jetstream.JetStream, key string) (NodeStatus, error) {
	var ns NodeStatus
	kv, err := hub.KeyValue(ctx, streams.StatusBucket)
	if err != nil {
		return ns, err
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return ns, err
	}
	return ns, json.Unmarshal(e.Value(), &ns)
}

// TelemetrySubject is where a node's test telemetry goes.
func TelemetrySubject(site, node string) string { return "telemetry." + site + "." + node + ".x" }

// PublishTelemetry publishes messages from..to-1 of a node to its site's
// TELEMETRY stream (js is the site's domain), each with a Nats-Msg-Id, and
// returns once every one is acknowledged: a producer may drop its copy only
// after the ack. Unacknowledged ones are sent again; the id makes that safe.
func PublishTelemetry(ctx context.Context, js jetstream.JetStream, site, node string, from, to int) error {
	subj := TelemetrySubject(site, node)
	pending := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		pending = append(pending, i)
	}
	payload := make([]byte, 100)
	for len(pending) > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%d of %d telemetry messages unacknowledged: %w", len(pending), to-from, err)
		}
		futures := make([]jetstream.PubAckFuture, len(pending))
		for k, i := range pending {
			m := nats.NewMsg(subj)
			m.Header.Set(jetstream.MsgIDHeader, MsgID(site, node, i))
			m.Data = payload
			f, err := js.PublishMsgAsync(m, jetstream.WithStallWait(5*time.Second))
			if err != nil {
				break
			}
			futures[k] = f
		}
		var again []int
		for k, i := range pending {
			f := futures[k]
			if f == nil {
				again = append(again, i)
				continue
			}
			select {
			case <-f.Ok():
			case <-f.Err():
				again = append(again, i)
			case <-time.After(10 * time.Second):
				again = append(again, i)
			}
		}
		if len(again) > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		pending = again
	}
	return nil
}

// MsgID is the Nats-Msg-Id of a node's telemetry message i.
func MsgID(site, node string, i int) string { return fmt.Sprintf("%s.%s.%d", site, node, i) }

// Count is what a stream holds of some publisher's messages.
type Count struct {
	Stored, Unique int
}

// CountTelemetry reads every message the scenarios published for a site
// (TelemetrySubject, any node) in the hub's TELEMETRY stream (js is the
// hub's domain) and counts them and their distinct ids. The agents' own
// telemetry, on other subjects, is not counted.
func CountTelemetry(ctx context.Context, js jetstream.JetStream, site string) (Count, error) {
	var c Count
	// FetchNoWait takes no context, and an ordered consumer that must be
	// made again (a hub cluster member just died) retries for ever unless
	// bounded: TestClusterMemberKilled hung 10 min in it once. Bounded, the
	// count fails and the caller's polling asks again.
	cons, err := js.OrderedConsumer(ctx, streams.TelemetryStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{TelemetrySubject(site, "*")}, DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxResetAttempts: 5})
	if err != nil {
		return c, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return c, err
	}
	want := int(info.NumPending)
	seen := make(map[string]bool, want)
	for c.Stored < want {
		batch, err := cons.FetchNoWait(min(want-c.Stored, 1000))
		if err != nil {
			return c, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			c.Stored++
			seen[m.Headers().Get(jetstream.MsgIDHeader)] = true
		}
		if err := batch.Error(); err != nil {
			return c, err
		}
		if n == 0 {
			batch, err = cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				return c, err
			}
			got := 0
			for m := range batch.Messages() {
				got++
				c.Stored++
				seen[m.Headers().Get(jetstream.MsgIDHeader)] = true
			}
			if got == 0 {
				return c, fmt.Errorf("read %d of %d telemetry messages of %s", c.Stored, want, site)
			}
		}
	}
	c.Unique = len(seen)
	return c, nil
}
