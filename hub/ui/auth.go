package ui

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Signing in, in production. A browser cannot hold a NATS credentials file
// safely and HTTP basic auth has nothing to check a creds file against, so
// the admin proves possession of the tenant admin's nkey the way NATS
// itself does: the UI hands out a nonce, `alpha ui login` signs it with the
// seed of the creds file and sends it with the user JWT; the UI checks the
// JWT (signed by the tenant's account, not expired), that its subject is
// that tenant's admin user, and the signature of the nonce with that key.
// It answers with a one-time URL (valid 60 s) that opens a session in the
// browser: a random id in an HttpOnly, Secure, SameSite=Strict cookie.

// Admin is a tenant administrator the UI lets in.
type Admin struct {
	Tenant  string
	Account string // public key of the tenant's account, the JWT's issuer
}

// AdminFromCreds reads a tenant admin's credentials file (from the hub's
// operator directory) into the user key it authenticates with.
func AdminFromCreds(tenant, path string) (user string, a Admin, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", a, err
	}
	tok, err := jwt.ParseDecoratedJWT(raw)
	if err != nil {
		return "", a, fmt.Errorf("ui: admin credentials %s: %w", path, err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return "", a, fmt.Errorf("ui: admin credentials %s: %w", path, err)
	}
	acct := uc.Issuer
	if uc.IssuerAccount != "" {
		acct = uc.IssuerAccount
	}
	return uc.Subject, Admin{Tenant: tenant, Account: acct}, nil
}

const (
	cookieName = "alpha_session"
	nonceTTL   = time.Minute
	ticketTTL  = time.Minute
	sessionTTL = 12 * time.Hour
	// maxPending bounds unanswered challenges and unused tickets, so
	// anonymous requests cannot grow the hub's memory.
	maxPending = 1024
)

type auth struct {
	admins map[string]Admin // user public key -> admin
	secure bool             // cookies only over TLS
	now    func() time.Time

	mu       sync.Mutex
	nonces   map[string]time.Time
	tickets  map[string]session
	sessions map[string]session
}

type session struct {
	tenant  string
	expires time.Time
}

func newAuth(admins map[string]Admin, secure bool) *auth {
	return &auth{admins: admins, secure: secure, now: time.Now,
		nonces: map[string]time.Time{}, tickets: map[string]session{}, sessions: map[string]session{}}
}

func randomID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// prune drops what expired; the caller holds mu.
func (a *auth) prune(now time.Time) {
	for k, exp := range a.nonces {
		if now.After(exp) {
			delete(a.nonces, k)
		}
	}
	for _, m := range []map[string]session{a.tickets, a.sessions} {
		for k, s := range m {
			if now.After(s.expires) {
				delete(m, k)
			}
		}
	}
}

// session is the tenant of the request's session, if it has a valid one.
func (a *auth) session(r *http.Request) (string, bool) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return "", false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[c.Value]
	if !ok || a.now().After(s.expires) {
		return "", false
	}
	return s.tenant, true
}

// challenge: POST /login/challenge -> {"nonce": ...}.
func (a *auth) challenge(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	now := a.now()
	a.mu.Lock()
	a.prune(now)
	if len(a.nonces) >= maxPending {
		a.mu.Unlock()
		http.Error(w, "too many sign-ins under way; try again in a minute", http.StatusTooManyRequests)
		return
	}
	n := randomID()
	a.nonces[n] = now.Add(nonceTTL)
	a.mu.Unlock()
	writeJSON(w, map[string]string{"nonce": n})
}

// verifyRequest is the body of POST /login/verify.
type verifyRequest struct {
	JWT   string `json:"jwt"`
	Nonce string `json:"nonce"`
	Sig   string `json:"sig"` // base64url (raw) of the nkey's signature of the nonce
}

// verify: POST /login/verify -> {"url": "/login/ticket?t=..."} or 403.
func (a *auth) verify(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var req verifyRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	tenant, err := a.check(req)
	if err != nil {
		http.Error(w, "sign-in refused: "+err.Error(), http.StatusForbidden)
		return
	}
	now := a.now()
	a.mu.Lock()
	a.prune(now)
	if len(a.tickets) >= maxPending {
		a.mu.Unlock()
		http.Error(w, "too many unused sign-in URLs; try again in a minute", http.StatusTooManyRequests)
		return
	}
	t := randomID()
	a.tickets[t] = session{tenant: tenant, expires: now.Add(ticketTTL)}
	a.mu.Unlock()
	writeJSON(w, map[string]string{"url": "/login/ticket?t=" + t, "tenant": tenant})
}

// check verifies a sign-in and returns the admin's tenant.
func (a *auth) check(req verifyRequest) (string, error) {
	a.mu.Lock()
	exp, ok := a.nonces[req.Nonce]
	delete(a.nonces, req.Nonce) // one attempt per nonce
	a.mu.Unlock()
	if !ok || a.now().After(exp) {
		return "", errors.New("unknown or expired nonce")
	}
	uc, err := jwt.DecodeUserClaims(req.JWT) // checks the JWT's own signature
	if err != nil {
		return "", fmt.Errorf("jwt: %w", err)
	}
	var vr jwt.ValidationResults
	uc.Validate(&vr)
	if vr.IsBlocking(true) {
		return "", fmt.Errorf("jwt of %s: %v", uc.Subject, vr.Errors())
	}
	adm, ok := a.admins[uc.Subject]
	if !ok {
		return "", fmt.Errorf("user %s is not a tenant administrator of this hub", uc.Subject)
	}
	issuer := uc.Issuer
	if uc.IssuerAccount != "" {
		issuer = uc.IssuerAccount
	}
	if issuer != adm.Account {
		return "", fmt.Errorf("user %s: issued by %s, not by tenant %s's account", uc.Subject, issuer, adm.Tenant)
	}
	sig, err := base64.RawURLEncoding.DecodeString(req.Sig)
	if err != nil {
		return "", fmt.Errorf("sig: %w", err)
	}
	kp, err := nkeys.FromPublicKey(uc.Subject)
	if err != nil {
		return "", err
	}
	if err := kp.Verify([]byte(req.Nonce), sig); err != nil {
		return "", fmt.Errorf("signature of the nonce by %s: %w", uc.Subject, err)
	}
	return adm.Tenant, nil
}

// ticket: GET /login/ticket?t=... sets the session cookie once.
func (a *auth) ticket(w http.ResponseWriter, r *http.Request) {
	t := r.URL.Query().Get("t")
	now := a.now()
	a.mu.Lock()
	s, ok := a.tickets[t]
	delete(a.tickets, t)
	if ok && !now.After(s.expires) {
		id := randomID()
		a.sessions[id] = session{tenant: s.tenant, expires: now.Add(sessionTTL)}
		a.mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/", HttpOnly: true, Secure: a.secure,
			SameSite: http.SameSiteStrictMode, MaxAge: int(sessionTTL / time.Second)})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	a.mu.Unlock()
	http.Error(w, "this sign-in URL is unknown, used or expired: run alpha ui login again", http.StatusForbidden)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// Login signs in to the UI at base (https://HOST:PORT) with a tenant
// admin's credentials file and returns the one-time URL that opens a
// session in a browser.
func Login(ctx context.Context, c *http.Client, base, credsPath string) (string, error) {
	raw, err := os.ReadFile(credsPath)
	if err != nil {
		return "", err
	}
	tok, err := jwt.ParseDecoratedJWT(raw)
	if err != nil {
		return "", fmt.Errorf("credentials %s: %w", credsPath, err)
	}
	kp, err := jwt.ParseDecoratedNKey(raw)
	if err != nil {
		return "", fmt.Errorf("credentials %s: %w", credsPath, err)
	}
	defer kp.Wipe()
	base = strings.TrimSuffix(base, "/")
	var ch struct{ Nonce string }
	if err := postJSON(ctx, c, base+"/login/challenge", nil, &ch); err != nil {
		return "", err
	}
	sig, err := kp.Sign([]byte(ch.Nonce))
	if err != nil {
		return "", err
	}
	var out struct{ URL string }
	if err := postJSON(ctx, c, base+"/login/verify",
		verifyRequest{JWT: tok, Nonce: ch.Nonce, Sig: base64.RawURLEncoding.EncodeToString(sig)}, &out); err != nil {
		return "", err
	}
	return base + out.URL, nil
}

func postJSON(ctx context.Context, c *http.Client, url string, in, out any) error {
	b, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, out)
}
