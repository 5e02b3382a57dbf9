package ui_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub/alerts"
	"github.com/alpha-edge/alpha/hub/ui"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

const tenant = "acme"

// dashboard is a production hub with two sites of one node each, and the
// dashboard served over TLS with the hub's certificate.
type dashboard struct {
	t      *testing.T
	p      *prodtest.Hub
	js     jetstream.JetStream // the tenant admin's
	leaves map[string]*leaf.Leaf
	stop   map[string]func() // each site's leaf
	srv    *httptest.Server
	client *http.Client // trusts the test CA, no session
}

func good(content string) string { return stack.Doc("web", "/etc/web.conf", content) }

func startDashboard(t *testing.T) *dashboard {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{tenant}})
	_, js := p.Admin(tenant)
	d := &dashboard{t: t, p: p, js: js, leaves: map[string]*leaf.Leaf{}, stop: map[string]func(){}}
	for _, site := range []string{"s1", "s2"} {
		bundle := p.AddSite(site, tenant, nil, "n1")
		l, stop := p.StartLeaf(bundle, prodtest.LeafOptions{})
		d.leaves[site], d.stop[site] = l, stop
		p.StartAgent(bundle, "n1", l.ClientURL(), prodtest.AgentOptions{})
		p.PutSigned(tenant, streams.Key(site, "n1"), []byte(good("v=1\n")))
	}
	for _, site := range []string{"s1", "s2"} {
		d.waitPhase(site, "n1", "Converged")
	}

	// The hub's alert rules, as alpha hub runs them, with a short stale time.
	eng, err := alerts.Start(context.Background(), alerts.Options{Tenants: []alerts.Tenant{{Name: tenant, JS: js}}, Log: stack.Log(),
		Config: alerts.Config{Interval: alerts.Duration(200 * time.Millisecond),
			Rules: []alerts.Rule{{Kind: alerts.KindStale, For: alerts.Duration(2 * time.Second)}}}})
	check.NoError(t, err)
	t.Cleanup(eng.Stop)

	user, adm, err := ui.AdminFromCreds(tenant, p.Op.AdminCreds(tenant))
	check.NoError(t, err)
	h, err := ui.New(ui.Config{Tenants: []ui.Tenant{{Name: tenant, JS: js}}, Admins: map[string]ui.Admin{user: adm},
		Secure: true, Log: stack.Log(), Tick: time.Second})
	check.NoError(t, err)
	d.srv = httptest.NewUnstartedServer(h)
	cert, err := tls.LoadX509KeyPair(p.PKI.Cert, p.PKI.Key)
	check.NoError(t, err)
	d.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	d.srv.StartTLS()
	t.Cleanup(d.srv.Close)
	ca, err := os.ReadFile(p.PKI.CA)
	check.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	d.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return d
}

func (d *dashboard) waitPhase(site, node, phase string) {
	d.t.Helper()
	kv, err := d.js.KeyValue(context.Background(), streams.StatusBucket)
	check.NoError(d.t, err)
	check.For(d.t, 30*time.Second, 50*time.Millisecond, func() error {
		ns, err := stack.NodeStatus(kv, site, node)
		if err != nil || ns.Phase != phase {
			return fmt.Errorf("%s.%s: phase %q (%v), want %s", site, node, ns.Phase, err, phase)
		}
		return nil
	})
}

// publishLogs puts log lines of s1.n1 into the site's LOGS stream, as the
// node's agent does, with the leaf's own identity; they flow up to the
// hub's LOGS like every uplink.
func (d *dashboard) publishLogs(lines ...string) {
	d.t.Helper()
	js := d.p.LeafJetStream(d.leaves["s1"])
	for i, text := range lines {
		l := streams.LogLine{TS: time.Now().UTC(), Site: "s1", Node: "n1", Kind: "unit", Source: "web.service", Level: "err",
			Text: text, ID: fmt.Sprintf("n1.test.%d", i)}
		b, _ := json.Marshal(l)
		_, err := js.Publish(context.Background(), l.Subject(), b, jetstream.WithMsgID(l.ID))
		check.NoError(d.t, err)
	}
}

// browser starts headless Chromium that trusts only the dashboard's
// certificate (by its key's hash), not every certificate.
func browser(t *testing.T, srv *httptest.Server) context.Context {
	path := check.NeedCommand(t, "chromium", "apt-get install chromium (see .ci/setup-chromium.sh)")
	spki := sha256.Sum256(srv.Certificate().RawSubjectPublicKeyInfo)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root, where Chromium's sandbox refuses to start
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	// The first action starts the browser; it must not run under a
	// deadline, which would stop the browser with it.
	check.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")))
	ctx, cancel3 := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel3)
	return ctx
}

// waitFor polls the page until an element matches selector. It asks the
// document each time instead of holding on to a node: the page swaps its
// live part every second and navigates on a filter, and a held node would
// be gone.
func waitFor(t *testing.T, ctx context.Context, selector string) {
	t.Helper()
	expr := "document.querySelector(" + strconv.Quote(selector) + ") !== null"
	check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err != nil || !ok {
			return fmt.Errorf("no %s on the page (%v)", selector, err)
		}
		return nil
	})
}

// artifacts is where screenshots go: $ALPHA_ARTIFACTS/ui, else a
// directory under the system's temp dir that outlives the test.
func artifacts(t *testing.T) string {
	dir := os.Getenv("ALPHA_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "alpha-artifacts")
	}
	dir = filepath.Join(dir, "ui")
	check.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	// A page being swapped or navigated has no layout for a moment ("Cannot
	// take screenshot with 0 width"): try again until it has.
	var png []byte
	check.For(t, 10*time.Second, 100*time.Millisecond, func() (err error) {
		png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG; less is JPEG
		return err
	})
	path := filepath.Join(artifacts(t), name)
	check.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot %s", path)
	// The README's picture, refreshed on request only: a test run does
	// not change the repository.
	if name == "fleet-alert.png" && os.Getenv("ALPHA_UPDATE_DOCS") != "" {
		check.NoError(t, os.WriteFile("../../docs/dashboard.png", png, 0o644))
	}
}

// TestDashboardInBrowser drives the dashboard of a production hub with two
// sites in headless Chromium: refused without a session, the fleet page
// after signing in, a node going Degraded on the open page after a bad
// revision, the filter by site, the node page with its recent logs, and a
// site gone silent: its stale alert firing on the open page.
func TestDashboardInBrowser(t *testing.T) {
	d := startDashboard(t)
	ctx := browser(t, d.srv)
	base := d.srv.URL

	// No session: every page and the event stream refuse and say how to sign in.
	for _, path := range []string{"/", "/node/s1/n1", "/events", "/?fragment=1"} {
		resp, err := d.client.Get(base + path)
		check.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), "s1") || !strings.Contains(string(body), "alpha ui login") {
			t.Fatalf("GET %s without a session: %s\n%s", path, resp.Status, body)
		}
	}
	check.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/")))
	refused, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
	check.NoError(t, err)
	if !strings.Contains(refused, "Sign-in required") {
		t.Fatalf("browser without a session shows %q", refused)
	}
	screenshot(t, ctx, "refused.png")

	// Credentials of the tenant that are not its administrator's (the
	// site's leaf user, signed by the same account) are refused.
	bundleCreds := filepath.Join(d.p.Dir, "bundle-s1-"+tenant, accounts.LeafCredsFile)
	if _, err := ui.Login(context.Background(), d.client, base, bundleCreds); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("sign-in with a site's leaf credentials: %v, want 403", err)
	}
	link, err := ui.Login(context.Background(), d.client, base, d.p.Op.AdminCreds(tenant))
	check.NoError(t, err)

	// The fleet page: both nodes Converged.
	check.NoError(t, chromedp.Do(ctx, chromedp.Navigate(link)))
	waitFor(t, ctx, `tr[data-node="s1.n1"][data-phase="Converged"]`)
	waitFor(t, ctx, `tr[data-node="s2.n1"][data-phase="Converged"]`)
	screenshot(t, ctx, "fleet.png")
	// A used sign-in URL does not open a second session.
	resp, err := d.client.Get(link)
	check.NoError(t, err)
	resp.Body.Close()
	check.Equal(t, resp.StatusCode, http.StatusForbidden)

	// A bad revision (an owner that does not exist): the open page shows
	// s1.n1 Degraded without being reloaded.
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__notReloaded = true`))
	check.NoError(t, err)
	d.p.PutSigned(tenant, streams.Key("s1", "n1"),
		[]byte(strings.Replace(good("v=2\n"), "path: /etc/web.conf", "path: /etc/web.conf\n      owner: alpha-no-such-user", 1)))
	d.waitPhase("s1", "n1", "Degraded")
	start := time.Now()
	waitFor(t, ctx, `tr[data-node="s1.n1"][data-phase="Degraded"]`)
	t.Logf("Degraded shown %v after the hub had it", time.Since(start).Round(time.Millisecond))
	marker, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__notReloaded === true`))
	check.NoError(t, err)
	if !marker {
		t.Fatal("the page was reloaded: the change did not arrive live")
	}
	screenshot(t, ctx, "fleet-degraded.png")

	// Filter by site: only s1's node is listed.
	// In one script: the live part may be swapped between a query for the
	// select and an action on it (seen as "No node with given id found").
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
		document.querySelector('select[name="site"]').value = "s1";
		document.querySelector('#filter').requestSubmit();
		return true;
	})()`))
	check.NoError(t, err)
	waitFor(t, ctx, `body[data-filter-site="s1"] tr[data-node="s1.n1"]`)
	s2rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('tr[data-node="s2.n1"]').length`))
	check.NoError(t, err)
	loc, err := chromedp.Run(ctx, chromedp.Location())
	check.NoError(t, err)
	if s2rows != 0 || !strings.Contains(loc, "site=s1") {
		t.Fatalf("filtered by site s1 (%s), still %d rows of s2", loc, s2rows)
	}
	screenshot(t, ctx, "fleet-filtered.png")

	// The node page: phase, the resource's error and its recent logs,
	// which arrive while the page is open.
	// Clicked through the document, not a held node: the link is in the
	// live part, which may be swapped in between.
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('a[href="/node/s1/n1"]').click(), true`))
	check.NoError(t, err)
	waitFor(t, ctx, `body[data-page="node"] #node-phase`)
	d.publishLogs("web: listening on :8080", "web: config owner alpha-no-such-user unknown", "web: giving up")
	waitFor(t, ctx, `#logs`)
	phase, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#node-phase").innerText`))
	check.NoError(t, err)
	check.Equal(t, strings.TrimSpace(phase), "Degraded")
	// The lines reach the hub one batch after another and the page shows
	// what is there at each refresh: wait for all of them.
	check.For(t, 30*time.Second, 100*time.Millisecond, func() error {
		logs, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#logs").innerText`))
		if err != nil {
			return err
		}
		for _, want := range []string{"listening on :8080", "alpha-no-such-user unknown", "giving up", "unit:web.service"} {
			if !strings.Contains(logs, want) {
				return fmt.Errorf("node page logs lack %q:\n%s", want, logs)
			}
		}
		return nil
	})
	screenshot(t, ctx, "node.png")

	// Site s2 goes silent: the fleet page shows its alert firing and the
	// site stale, live.
	check.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/")))
	waitFor(t, ctx, `tr[data-node="s2.n1"]`)
	d.stop["s2"]()
	waitFor(t, ctx, `li.alert[data-alert="stale"][data-site="s2"]`)
	waitFor(t, ctx, `tr[data-site="s2"] td.link-stale`)
	screenshot(t, ctx, "fleet-alert.png")
}
