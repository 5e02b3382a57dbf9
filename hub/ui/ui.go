// Package ui serves the hub's fleet dashboard: server-rendered pages of the
// fleet, its sites and nodes, kept live with server-sent events.
package ui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/streams"
)

//go:embed templates/*.html static/*
var files embed.FS

// Tenant is one account whose fleet the UI shows.
type Tenant struct {
	Name string // empty without operator mode
	JS   jetstream.JetStream
}

// Config is what a Server needs.
type Config struct {
	Tenants []Tenant
	// Admins, by user public key, are who may sign in; each sees its own
	// tenant. Nil: no sign-in, everyone who reaches the listener sees the
	// first tenant; only for a hub without operator mode, on loopback.
	Admins map[string]Admin
	// Secure says the UI is served over TLS: session cookies are Secure.
	Secure bool
	Log    *slog.Logger
	// Tick is how often an open page refreshes without any change, for
	// logs and charts (default 5 s); status and alert changes are pushed
	// at once.
	Tick time.Duration
}

// Server is the dashboard's HTTP handler.
type Server struct {
	cfg     Config
	auth    *auth
	tmpl    *template.Template
	mux     *http.ServeMux
	tenants map[string]jetstream.JetStream
}

// New builds the handler.
func New(cfg Config) (*Server, error) {
	if len(cfg.Tenants) == 0 {
		return nil, errors.New("ui: no tenant to show")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 5 * time.Second
	}
	tmpl, err := template.New("").Funcs(template.FuncMap{"lower": strings.ToLower,
		"pct": func(f *float64) string { return fmt.Sprintf("%.0f%%", 100**f) }}).ParseFS(files, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("ui: templates: %w", err)
	}
	s := &Server{cfg: cfg, tmpl: tmpl, mux: http.NewServeMux(), tenants: map[string]jetstream.JetStream{}}
	for _, t := range cfg.Tenants {
		s.tenants[t.Name] = t.JS
	}
	if cfg.Admins != nil {
		s.auth = newAuth(cfg.Admins, cfg.Secure)
		s.mux.HandleFunc("/login/challenge", s.auth.challenge)
		s.mux.HandleFunc("/login/verify", s.auth.verify)
		s.mux.HandleFunc("/login/ticket", s.auth.ticket)
	}
	static, _ := fs.Sub(files, "static")
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	s.mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) { s.refuse(w, http.StatusOK) })
	s.mux.HandleFunc("GET /{$}", s.signedIn(s.fleet))
	s.mux.HandleFunc("GET /node/{site}/{node}", s.signedIn(s.node))
	s.mux.HandleFunc("GET /events", s.signedIn(s.events))
	return s, nil
}

// ServeHTTP serves the UI with headers that keep its pages to themselves:
// no script, style or connection from elsewhere, no framing.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	s.mux.ServeHTTP(w, r)
}

// signedIn runs h with the request's tenant, or refuses.
func (s *Server) signedIn(h func(w http.ResponseWriter, r *http.Request, tenant string, js jetstream.JetStream)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tenant := s.cfg.Tenants[0].Name
		if s.auth != nil {
			t, ok := s.auth.session(r)
			if !ok {
				s.refuse(w, http.StatusUnauthorized)
				return
			}
			tenant = t
		}
		js, ok := s.tenants[tenant]
		if !ok {
			http.Error(w, fmt.Sprintf("tenant %q is not served by this hub", tenant), http.StatusForbidden)
			return
		}
		h(w, r, tenant, js)
	}
}

// refuse answers a request without a session with how to get one.
func (s *Server) refuse(w http.ResponseWriter, code int) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	s.tmpl.ExecuteTemplate(w, "login", map[string]any{"Required": s.auth != nil})
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, page string, data any) {
	name := page
	if r.URL.Query().Get("fragment") != "" {
		name = page + "-live"
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.tmpl.ExecuteTemplate(w, name, data); err != nil {
		s.cfg.Log.Warn("ui: rendering", "page", name, "err", err)
	}
}

func (s *Server) fleet(w http.ResponseWriter, r *http.Request, tenant string, js jetstream.JetStream) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	q := r.URL.Query()
	v, err := loadFleet(ctx, js, filter{Site: q.Get("site"), Phase: q.Get("phase"), Q: q.Get("q")}, time.Now())
	if err != nil {
		http.Error(w, "reading the fleet: "+err.Error(), http.StatusBadGateway)
		return
	}
	v.Tenant = tenant
	s.render(w, r, "fleet", v)
}

func (s *Server) node(w http.ResponseWriter, r *http.Request, tenant string, js jetstream.JetStream) {
	site, node := r.PathValue("site"), r.PathValue("node")
	if streams.ValidID("site", site) != nil || streams.ValidID("node", node) != nil {
		http.Error(w, fmt.Sprintf("no node %q of site %q", node, site), http.StatusNotFound)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	v, err := loadNode(ctx, js, site, node, time.Now())
	if err != nil {
		http.Error(w, "reading the node: "+err.Error(), http.StatusBadGateway)
		return
	}
	v.Tenant = tenant
	s.render(w, r, "node", v)
}

// events is the pages' server-sent event stream: "change" when a node's
// status or an alert changes (the page fetches its live part again), and
// "tick" every Tick for what changes without a status (logs, charts).
func (s *Server) events(w http.ResponseWriter, r *http.Request, _ string, js jetstream.JetStream) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ctx := r.Context()
	changes := make(chan string, 64)
	for _, bucket := range []string{streams.StatusBucket, streams.AlertsBucket} {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			continue // the alerts bucket appears with the alerts engine
		}
		opts := []jetstream.WatchOpt{jetstream.UpdatesOnly()}
		if bucket == streams.StatusBucket {
			// A resolved alert is a delete and must reach the page; a
			// status is never deleted at the hub.
			opts = append(opts, jetstream.IgnoreDeletes())
		}
		wt, err := kv.WatchAll(ctx, opts...)
		if err != nil {
			continue
		}
		defer wt.Stop()
		go func() {
			for en := range wt.Updates() {
				if en == nil {
					continue
				}
				select {
				case changes <- bucket + ":" + en.Key():
				default: // the page refreshes whole; one pending change is enough
				}
			}
		}()
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprint(w, "retry: 2000\n\n")
	fl.Flush()
	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case k := <-changes:
			fmt.Fprintf(w, "event: change\ndata: %s\n\n", k)
		case <-tick.C:
			fmt.Fprint(w, "event: tick\ndata: \n\n")
		}
		fl.Flush()
	}
}
