package bundle

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/streams"
)

// ExportConfig says what goes into a site's bundle.
type ExportConfig struct {
	Site, Tenant string
	// Since leaves out values at or below this hub revision (0: all).
	Since uint64
	// Seed signs the bundle: the tenant's publisher key or the hub's
	// outputs key, both of which the site bundle already trusts.
	Seed        []byte
	TrustedKeys []string
	Revocations []string
	Progress    *Progress
}

// kvEntry is a value to export.
type kvEntry struct {
	bucket string
	e      jetstream.KeyValueEntry
}

// Export writes the site's bundle to w, reading the hub through hub (the
// tenant administrator's JetStream in the hub's domain): the site's latest
// blueprints and cloud outputs exactly as stored (signed), then the
// artifacts those blueprints name, each content once. Artifacts go first
// in the file so an importer has them in place before any blueprint that
// names them; values go in hub revision order.
func Export(ctx context.Context, hub jetstream.JetStream, cfg ExportConfig, w *Writer) (*Manifest, error) {
	m := w.Manifest()
	m.Format, m.Site, m.Tenant, m.Since = Format, cfg.Site, cfg.Tenant, cfg.Since
	m.TrustedKeys, m.Revocations = cfg.TrustedKeys, cfg.Revocations
	m.Revisions = map[string]uint64{}
	var values []kvEntry
	for _, bucket := range []string{streams.BlueprintsBucket, streams.CloudBucket} {
		kv, err := hub.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("bundle: hub bucket %s: %w", bucket, err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("bundle: hub bucket %s: %w", bucket, err)
		}
		// Read before the values: a value put meanwhile is newer than the
		// recorded revision and goes in the next bundle too.
		m.Revisions[bucket] = st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
		keys, err := natsutil.ListKeys(ctx, kv, cfg.Site+".>")
		if err != nil {
			return nil, fmt.Errorf("bundle: keys of site %s in %s: %w", cfg.Site, bucket, err)
		}
		for _, k := range keys {
			e, err := kv.Get(ctx, k)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue // deleted since listed
			}
			if err != nil {
				return nil, fmt.Errorf("bundle: %s %s: %w", bucket, k, err)
			}
			if e.Revision() > cfg.Since {
				values = append(values, kvEntry{bucket, e})
			}
		}
	}
	sort.Slice(values, func(i, j int) bool { return values[i].e.Revision() < values[j].e.Revision() })

	// The artifacts the exported blueprints name, by content.
	names := map[string][]string{} // sha256 -> object names
	for _, v := range values {
		if v.bucket != streams.BlueprintsBucket {
			continue
		}
		content, ok := sign.Content(sign.Format, v.e.Value())
		if !ok {
			content = v.e.Value() // an unsigned (dev) value
		}
		bp, err := blueprint.Parse(content)
		if err != nil {
			continue // the agent refuses it and says why; it needs nothing
		}
		for _, a := range artifactsOf(bp) {
			sha := strings.ToLower(a.SHA256)
			if !slices.Contains(names[sha], a.Name) {
				names[sha] = append(names[sha], a.Name)
			}
		}
	}
	arts, err := artifactInfos(ctx, hub, names)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, a := range arts {
		total += int64(a.info.Size)
	}
	for _, v := range values {
		total += int64(len(v.e.Value()))
	}
	w.progress.setTotal(total)
	for _, a := range arts {
		if err := exportArtifact(ctx, hub, a, w); err != nil {
			return nil, err
		}
	}
	for _, v := range values {
		e := Entry{Name: "kv/" + v.bucket + "/" + v.e.Key(), Kind: KindKV, Bucket: v.bucket, Key: v.e.Key(), Revision: v.e.Revision()}
		if err := w.Add(e, int64(len(v.e.Value())), bytes.NewReader(v.e.Value())); err != nil {
			return nil, err
		}
	}
	return w.Close(cfg.Seed)
}

// artifact is one content to export and the names it goes by.
type artifact struct {
	sha   string
	names []string
	info  *jetstream.ObjectInfo
}

// artifactInfos looks up every named artifact at the hub and checks it
// has the content the blueprints name.
func artifactInfos(ctx context.Context, hub jetstream.JetStream, names map[string][]string) ([]artifact, error) {
	if len(names) == 0 {
		return nil, nil
	}
	obs, err := hub.ObjectStore(ctx, streams.ArtifactsBucket)
	if err != nil {
		return nil, fmt.Errorf("bundle: hub object store %s: %w", streams.ArtifactsBucket, err)
	}
	var out []artifact
	for sha, ns := range names {
		sort.Strings(ns)
		a := artifact{sha: sha, names: ns}
		for _, n := range ns {
			i, err := obs.GetInfo(ctx, n)
			if err != nil {
				return nil, fmt.Errorf("bundle: artifact %q (sha256 %s) named by a blueprint: %w", n, sha, err)
			}
			if got := objectSHA256(i); got != sha {
				return nil, fmt.Errorf("bundle: artifact %q at the hub has sha256 %s, a blueprint names %s", n, got, sha)
			}
			a.info = i
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].sha < out[j].sha })
	return out, nil
}

func exportArtifact(ctx context.Context, hub jetstream.JetStream, a artifact, w *Writer) error {
	// A deadline of its own: without one the object store gives the whole
	// transfer its 5 s default.
	ctx, cancel := context.WithTimeout(ctx, TransferTimeout)
	defer cancel()
	r, err := openObject(ctx, hub, streams.ArtifactsBucket, a.info)
	if err != nil {
		return fmt.Errorf("bundle: artifact %q: %w", a.info.Name, err)
	}
	err = w.Add(Entry{Name: "artifacts/" + a.sha, Kind: KindArtifact, Names: a.names}, int64(a.info.Size), r)
	r.Close()
	if err != nil {
		return err
	}
	if got := w.Manifest().Entries[len(w.Manifest().Entries)-1].SHA256; got != a.sha {
		return fmt.Errorf("bundle: artifact %q read with sha256 %s, want %s", a.info.Name, got, a.sha)
	}
	return nil
}

// objectSHA256 is the hex sha256 of an object, from its digest
// ("SHA-256=<base64url>").
func objectSHA256(i *jetstream.ObjectInfo) string {
	d, ok := strings.CutPrefix(i.Digest, "SHA-256=")
	if !ok {
		return ""
	}
	b, err := base64.URLEncoding.DecodeString(d)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(b)
}

// artifactsOf lists what a node needs from the artifacts store to apply bp.
func artifactsOf(bp *blueprint.Blueprint) []blueprint.Artifact {
	var out []blueprint.Artifact
	for _, c := range bp.Spec.Containers {
		if c.Artifact != nil {
			out = append(out, *c.Artifact)
		}
	}
	for _, u := range bp.Spec.Units {
		if u.Executable != nil && u.Executable.Artifact != nil {
			out = append(out, *u.Executable.Artifact)
		}
	}
	return out
}

// TransferTimeout bounds one artifact's transfer from or into an object
// store.
const TransferTimeout = 2 * time.Hour

// Now is the clock of bundle timestamps (a test may pin it).
var Now = func() time.Time { return time.Now().UTC() }
