package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
)

// The hub's --ui-listen in operator mode: HTTPS with the hub's certificate,
// nothing without a session, and `alpha ui login` with a tenant admin's
// credentials opens that tenant's fleet (and not the other's).
func TestUIListenOperatorMode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	op, err := accounts.Init(filepath.Join(dir, "operator"), "test", []string{"x", "y"})
	check.NoError(t, err)
	pki, err := testpki.Write(dir)
	check.NoError(t, err)
	store := filepath.Join(dir, "hub")
	h, err := hub.Start(ctx, hub.Config{StoreDir: store, Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Log: log,
		Options:       op.HubOptions(filepath.Join(store, "resolver")),
		ClientOptions: []nats.Option{nats.UserCredentials(op.AdminCreds("x"))}})
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	check.NoError(t, bootstrapTenants(ctx, h, op, log))

	start := func(tf tlsfiles.Files) (func(), string, error) {
		fs := flag.NewFlagSet("hub", flag.ContinueOnError)
		uf := addUIFlags(fs, "")
		check.NoError(t, fs.Parse([]string{"--ui-listen", "127.0.0.1:-1", "--alerts", "off"}))
		return uf.start(ctx, h, op, tf, log)
	}
	// Without the hub's certificate there is no dashboard in operator mode.
	stop, _, err := start(tlsfiles.Files{})
	stop()
	if err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("operator mode without a certificate: %v", err)
	}
	stop, url, err := start(pki)
	check.NoError(t, err)
	t.Cleanup(stop)
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("dashboard URL %q", url)
	}
	tc, err := tlsfiles.Files{CA: pki.CA}.Client()
	check.NoError(t, err)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Jar: jar}
	get := func(u string) (int, string) {
		resp, err := c.Get(u)
		check.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(url); code != http.StatusUnauthorized || !strings.Contains(body, "Sign-in required") {
		t.Fatalf("without a session: %d\n%s", code, body)
	}

	// alpha ui login prints the one-time URL.
	r, w, err := os.Pipe()
	check.NoError(t, err)
	stdout := os.Stdout
	os.Stdout = w
	err = runUI(ctx, []string{"login", "--url", url, "--creds", op.AdminCreds("y"), "--tls-ca", pki.CA})
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	check.NoError(t, err)
	link := strings.TrimSpace(string(out))
	if !strings.HasPrefix(link, strings.TrimSuffix(url, "/")+"/login/ticket?t=") {
		t.Fatalf("alpha ui login printed %q", out)
	}
	code, body := get(link)
	if code != http.StatusOK || !strings.Contains(body, "tenant y") || strings.Contains(body, "tenant x") {
		t.Fatalf("signed in as y's admin: %d\n%s", code, body)
	}
}

// Without operator mode nobody signs in, so the dashboard stays on loopback.
func TestUIListenInsecureLoopbackOnly(t *testing.T) {
	h, err := hub.Start(context.Background(), hub.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	uf := addUIFlags(fs, "")
	check.NoError(t, fs.Parse([]string{"--ui-listen", "0.0.0.0:-1", "--alerts", "off"}))
	stop, _, err := uf.start(context.Background(), h, nil, tlsfiles.Files{}, slog.Default())
	stop()
	if err == nil || !strings.Contains(err.Error(), "loopback only") {
		t.Fatalf("--ui-listen 0.0.0.0 without operator mode: %v", err)
	}
}
