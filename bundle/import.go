package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/streams"
)

// MarkerBucket is the KV bucket, at the site and at the hub, where bundle
// importers record what they took in: the last downlink bundle at a site
// (its age decides what is older), the uplink ranges at the hub.
const MarkerBucket = "bundles"

// HubRevisionHeader carries, on every value a bundle import writes at a
// site, the hub's revision of that value: the importer writes a key only
// forward of it.
const HubRevisionHeader = "Alpha-Hub-Revision"

// downlinkKey is the marker of the last downlink bundle imported.
const downlinkKey = "downlink"

// Imported is what an import did.
type Imported struct {
	Site                   string            `json:"site"`
	Created                time.Time         `json:"created"`
	Revisions              map[string]uint64 `json:"revisions"`
	Values, Artifacts      int               // written
	SkippedValues, Present int               // already at the site (same or newer), artifacts already there
	Signer                 string            `json:"-"`
}

// ImportConfig is the site an import runs at and whom it trusts.
type ImportConfig struct {
	Site string
	// Trusted are the public keys the site bundle trusts (its
	// trusted-keys and hub-outputs.pub); nothing else signs a bundle.
	Trusted []string
	Log     *slog.Logger
}

// Import takes the downlink bundle at path into the site's stores through
// js (the site's own domain, with the leaf's own rights). It verifies the
// whole file first and refuses, changing nothing, a bundle that is not
// signed by a trusted key, does not match its manifest, is cut short, is
// for another site, or is older than the last bundle the site imported.
// Then it writes artifacts, cloud outputs and blueprints (in that order,
// the file's) exactly as the hub stored them; agents verify them as they
// verify what a mirror brings. Idempotent: a value whose hub revision the
// site already holds is skipped, so importing a bundle again writes
// nothing.
func Import(ctx context.Context, js jetstream.JetStream, path string, cfg ImportConfig) (*Imported, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m, err := Verify(path, Format, cfg.Trusted)
	if err != nil {
		return nil, err
	}
	if m.Site != cfg.Site {
		return nil, fmt.Errorf("%w: made for site %q, this is site %q", ErrOtherSite, m.Site, cfg.Site)
	}
	for _, e := range m.Entries {
		if e.Kind == KindKV && !strings.HasPrefix(e.Key, cfg.Site+".") {
			return nil, fmt.Errorf("%w: value %s/%s is not one of site %s's keys", ErrOtherSite, e.Bucket, e.Key, cfg.Site)
		}
		if e.Kind == KindKV && e.Bucket != streams.BlueprintsBucket && e.Bucket != streams.CloudBucket {
			return nil, fmt.Errorf("%w: value %s/%s is in unknown bucket %q", ErrTampered, e.Bucket, e.Key, e.Bucket)
		}
	}
	stores := map[string]bool{}
	for _, st := range streams.Mirrored() {
		s, err := js.Stream(ctx, st.Stream())
		if err != nil {
			return nil, fmt.Errorf("bundle: the site has no %s store (%v): is its leaf running?", st.Bucket, err)
		}
		if s.CachedInfo().Config.Mirror != nil {
			return nil, fmt.Errorf("bundle: the site's %s is a mirror of the hub (its leaf runs with --hub and has synced): "+
				"it takes its blueprints from the uplink, not from bundles", st.Bucket)
		}
		stores[st.Bucket] = true
	}
	marker, err := markers(ctx, js)
	if err != nil {
		return nil, err
	}
	var last Imported
	if e, err := marker.Get(ctx, downlinkKey); err == nil {
		if err := json.Unmarshal(e.Value(), &last); err != nil {
			return nil, fmt.Errorf("bundle: marker %s/%s: %w", MarkerBucket, downlinkKey, err)
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("bundle: marker %s/%s: %w", MarkerBucket, downlinkKey, err)
	}
	for bucket, had := range last.Revisions {
		if got := m.Revisions[bucket]; got < had {
			return nil, fmt.Errorf("%w: it holds %s up to hub revision %d (made %s); the site imported up to revision %d (bundle made %s)",
				ErrOlder, bucket, got, m.Created.Format(time.RFC3339), had, last.Created.Format(time.RFC3339))
		}
	}

	res := &Imported{Site: m.Site, Created: m.Created, Revisions: m.Revisions}
	obs, err := js.ObjectStore(ctx, streams.ArtifactsBucket)
	if err != nil {
		return nil, fmt.Errorf("bundle: site object store %s: %w", streams.ArtifactsBucket, err)
	}
	err = Each(path, m, func(e Entry, r io.Reader) error {
		switch e.Kind {
		case KindArtifact:
			return importArtifact(ctx, js, obs, e, r, res)
		case KindKV:
			return importValue(ctx, js, e, r, res)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	// Record the bundle only once everything in it is in place: a crash
	// before this leaves a re-import to finish the job.
	mark := *res
	mark.Revisions = map[string]uint64{}
	same := len(last.Revisions) == len(m.Revisions)
	for b, rev := range m.Revisions {
		mark.Revisions[b] = max(rev, last.Revisions[b])
		same = same && last.Revisions[b] == rev
	}
	if !same || res.Values > 0 || res.Artifacts > 0 {
		b, _ := json.Marshal(mark)
		if _, err := marker.Put(ctx, downlinkKey, b); err != nil {
			return res, fmt.Errorf("bundle: marker %s/%s: %w", MarkerBucket, downlinkKey, err)
		}
	}
	cfg.Log.Info("bundle imported", "site", m.Site, "created", m.Created, "values", res.Values, "artifacts", res.Artifacts,
		"skipped", res.SkippedValues, "present", res.Present)
	return res, nil
}

// markers opens (or makes) the marker bucket in js's domain.
func markers(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, MarkerBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: MarkerBucket, History: 5,
			Storage: jetstream.FileStorage, Description: "what signed bundles brought in"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, MarkerBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bundle: marker bucket %s: %w", MarkerBucket, err)
	}
	return kv, nil
}

func importArtifact(ctx context.Context, js jetstream.JetStream, obs jetstream.ObjectStore, e Entry, r io.Reader, res *Imported) error {
	sha := strings.TrimPrefix(e.Name, "artifacts/")
	var put []string
	for _, n := range e.Names {
		if i, err := obs.GetInfo(ctx, n); err == nil && objectSHA256(i) == sha {
			res.Present++
			continue
		}
		put = append(put, n)
	}
	if len(put) == 0 {
		return nil
	}
	// A deadline of its own: a large artifact on a slow disk takes a while.
	ctx, cancel := context.WithTimeout(ctx, TransferTimeout)
	defer cancel()
	// The first missing name reads the content from the file (checked at
	// its end: a mismatch leaves no object); further names of the same
	// content copy it from the store.
	first, err := putObject(ctx, js, streams.ArtifactsBucket, put[0], r)
	if err != nil {
		return fmt.Errorf("bundle: artifact %q: %w", put[0], err)
	}
	res.Artifacts++
	for _, n := range put[1:] {
		src, err := openObject(ctx, js, streams.ArtifactsBucket, first)
		if err != nil {
			return fmt.Errorf("bundle: artifact %q: %w", n, err)
		}
		_, err = putObject(ctx, js, streams.ArtifactsBucket, n, src)
		src.Close()
		if err != nil {
			return fmt.Errorf("bundle: artifact %q: %w", n, err)
		}
		res.Artifacts++
	}
	return nil
}

// importValue writes one KV value unless the site already holds the same
// or a newer hub revision of the key. The expected-last-sequence check
// makes two imports racing on a key write it at most once.
func importValue(ctx context.Context, js jetstream.JetStream, e Entry, r io.Reader, res *Imported) error {
	value, err := ReadAll(r, e)
	if err != nil {
		return err
	}
	stream, subject := "KV_"+e.Bucket, "$KV."+e.Bucket+"."+e.Key
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("bundle: site store %s: %w", e.Bucket, err)
	}
	var lastSeq uint64
	cur, err := s.GetLastMsgForSubject(ctx, subject)
	switch {
	case err == nil:
		lastSeq = cur.Sequence
		had, _ := strconv.ParseUint(cur.Header.Get(HubRevisionHeader), 10, 64)
		if had >= e.Revision {
			res.SkippedValues++
			return nil
		}
	case errors.Is(err, jetstream.ErrMsgNotFound):
	default:
		return fmt.Errorf("bundle: site %s %s: %w", e.Bucket, e.Key, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = value
	msg.Header.Set(HubRevisionHeader, strconv.FormatUint(e.Revision, 10))
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(lastSeq)); err != nil {
		return fmt.Errorf("bundle: writing %s %s (hub revision %d): %w", e.Bucket, e.Key, e.Revision, err)
	}
	res.Values++
	return nil
}
