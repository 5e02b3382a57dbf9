package bundle

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/fileio"
	"github.com/alpha-edge/alpha/streams"
)

// Request asks a site leaf's bundle service to import the bundle at Path,
// or to export the uplink to Path. The leaf reads and writes the file
// itself: the command runs on the leaf's machine.
type Request struct {
	Path string `json:"path"`
	// From re-exports the uplink from this site sequence (export-uplink).
	From uint64 `json:"from,omitempty"`
}

// Reply is the service's answer.
type Reply struct {
	Error    string          `json:"error,omitempty"`
	Imported *Imported       `json:"imported,omitempty"`
	Manifest *ManifestDigest `json:"manifest,omitempty"`
}

// ManifestDigest summarises an exported uplink bundle.
type ManifestDigest struct {
	Entries []Entry `json:"entries"`
}

// ServeConfig is the site leaf's side of bundles.
type ServeConfig struct {
	Site, Tenant string
	// Trusted sign downlink bundles (the site bundle's trusted keys and
	// hub outputs key).
	Trusted []string
	// Seed signs uplink bundles (the leaf's nkey from leaf.creds).
	Seed []byte
	Log  *slog.Logger
}

// Serve answers bundle requests through js, the leaf's own JetStream in
// the site's domain over its in-process connection (rights to every store
// of the site), until ctx ends. One request runs at a time: two imports at
// once would only race.
func Serve(ctx context.Context, js jetstream.JetStream, cfg ServeConfig) error {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	work := make(chan *nats.Msg, 16)
	sub, err := js.Conn().ChanSubscribe(streams.BundleSubject(cfg.Site, "*"), work)
	if err != nil {
		return fmt.Errorf("bundle: service: %w", err)
	}
	go func() {
		defer sub.Unsubscribe()
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-work:
				rep := handle(ctx, js, cfg, m)
				b, _ := json.Marshal(rep)
				m.Respond(b)
			}
		}
	}()
	return nil
}

func handle(ctx context.Context, js jetstream.JetStream, cfg ServeConfig, m *nats.Msg) Reply {
	op := strings.TrimPrefix(m.Subject, streams.BundleSubject(cfg.Site, ""))
	if op != "import" && op != "export-uplink" {
		return Reply{Error: fmt.Sprintf("unknown bundle operation %q (import, export-uplink)", op)}
	}
	var req Request
	if err := json.Unmarshal(m.Data, &req); err != nil {
		return Reply{Error: fmt.Sprintf("bad request %q: %v", m.Data, err)}
	}
	if !filepath.IsAbs(req.Path) {
		return Reply{Error: fmt.Sprintf("path %q is not absolute (the leaf opens it)", req.Path)}
	}
	switch op {
	case "import":
		res, err := Import(ctx, js, req.Path, ImportConfig{Site: cfg.Site, Trusted: cfg.Trusted, Log: cfg.Log})
		if err != nil {
			cfg.Log.Warn("bundle refused", "path", req.Path, "err", err)
			return Reply{Error: err.Error(), Imported: res}
		}
		return Reply{Imported: res}
	default:
		man, err := exportUplinkFile(ctx, js, cfg, req)
		if err != nil {
			cfg.Log.Warn("uplink export failed", "path", req.Path, "err", err)
			return Reply{Error: err.Error()}
		}
		return Reply{Manifest: &ManifestDigest{Entries: man.Entries}}
	}
}

// exportUplinkFile writes the uplink bundle to req.Path atomically and
// durably: the uplink consumers move only after the file is whole on disk.
func exportUplinkFile(ctx context.Context, js jetstream.JetStream, cfg ServeConfig, req Request) (*Manifest, error) {
	out, err := fileio.Create(req.Path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	defer out.Discard()
	w := NewWriter(out, Manifest{}, nil)
	return ExportUplink(ctx, js, UplinkExportConfig{Site: cfg.Site, Tenant: cfg.Tenant, Seed: cfg.Seed,
		TmpDir: filepath.Dir(req.Path), From: req.From, Log: cfg.Log}, w, out.Commit)
}
