package bundle

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
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
	// Dirs are the only directories the leaf reads bundles from and
	// writes uplink bundles to (where sticks are mounted): the leaf runs
	// with more rights than the site operator who asks, who must not be
	// able to make it read or overwrite any other file.
	Dirs []string
	Log  *slog.Logger
}

// DefaultDirs are where removable media are mounted on common systems.
var DefaultDirs = []string{"/media", "/mnt", "/run/media"}

// allowed checks that path lies in one of dirs once symlinks are resolved
// (of its directory: the file itself may not exist yet), and that an
// uplink bundle would not replace an existing file.
func allowed(path string, dirs []string, create bool) error {
	dir, err := filepath.EvalSymlinks(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	real := filepath.Join(dir, filepath.Base(path))
	if !create {
		if real, err = filepath.EvalSymlinks(path); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
	} else if _, err := os.Lstat(real); err == nil {
		return fmt.Errorf("bundle: %s exists; the leaf writes uplink bundles only to new files", path)
	}
	for _, d := range dirs {
		ad, err := filepath.Abs(d)
		if err != nil {
			continue
		}
		rd, err := filepath.EvalSymlinks(ad)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(rd, real); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return nil
		}
	}
	return fmt.Errorf("bundle: %s is outside the directories the leaf takes sticks from (%s; alpha site/leaf --stick-dir)",
		path, strings.Join(dirs, ", "))
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
	dirs := cfg.Dirs
	if len(dirs) == 0 {
		dirs = DefaultDirs
	}
	if err := allowed(req.Path, dirs, op == "export-uplink"); err != nil {
		cfg.Log.Warn("bundle request refused", "op", op, "path", req.Path, "err", err)
		return Reply{Error: err.Error()}
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
