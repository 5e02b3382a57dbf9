// Package artifacts fetches the files a blueprint names by sha256 (image
// archives, executables) from the hub's JetStream object store, verifies them
// and keeps them in a site cache, so a node that reboots offline needs
// nothing from the hub.
package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/fileio"
	"github.com/alpha-edge/alpha/streams"
)

// ErrChecksum is wrapped (with driver.ErrTerminal) when an artifact's content
// does not match the sha256 the blueprint names. Retrying cannot fix that.
var ErrChecksum = errors.New("artifact sha256 mismatch")

// ErrNotFound is wrapped when the hub has no object of that name.
var ErrNotFound = errors.New("artifact not found at the hub")

// Fetcher makes an artifact available as a local file. Drivers take one so
// tests and other sources can stand in for the hub.
type Fetcher interface {
	// Fetch returns the path of a local, verified copy of a. It may be called
	// any number of times; a cached copy is returned without any network.
	Fetch(ctx context.Context, a blueprint.Artifact) (string, error)
}

// Source opens an artifact by name, wherever it lives.
type Source interface {
	Open(ctx context.Context, name string) (io.ReadCloser, error)
}

// ObjectStore is a Source reading the hub's artifacts bucket through a NATS
// connection (the site leaf's), across the JetStream domain boundary.
type ObjectStore struct {
	nc     *nats.Conn
	domain string
	bucket string
}

// NewObjectStore reads bucket in JetStream domain through nc; empty domain and
// bucket mean the hub's streams.ArtifactsBucket. Agents read their site's
// mirror of it (domain = the site).
func NewObjectStore(nc *nats.Conn, domain, bucket string) *ObjectStore {
	if domain == "" {
		domain = streams.HubDomain
	}
	if bucket == "" {
		bucket = streams.ArtifactsBucket
	}
	return &ObjectStore{nc: nc, domain: domain, bucket: bucket}
}

// Open fetches the object; the object store checks its own digest as it reads.
func (o *ObjectStore) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	js, err := jetstream.NewWithDomain(o.nc, o.domain)
	if err != nil {
		return nil, err
	}
	lookup, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	obs, err := js.ObjectStore(lookup, o.bucket)
	if err != nil {
		return nil, fmt.Errorf("object store %q in domain %q: %w", o.bucket, o.domain, err)
	}
	// ctx bounds the whole download: without a deadline of its own the
	// object store would give a large archive only its 5 s default.
	r, err := obs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%q in bucket %q: %w", name, o.bucket, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%q in bucket %q: %w", name, o.bucket, err)
	}
	return r, nil
}

// Cache is the site's artifact cache: DIR/<sha256>, each file verified before
// it is renamed into place. It is a Fetcher.
type Cache struct {
	// FetchTimeout bounds one download (default 30 minutes: image archives
	// can be large and site links slow).
	FetchTimeout time.Duration

	dir string
	src Source
	log *slog.Logger

	mu       sync.Mutex
	verified map[string]fileID // cached files hashed since this process started
	fetching map[string]*sync.Mutex
}

var _ Fetcher = (*Cache)(nil)

type fileID struct {
	size  int64
	mtime int64
}

// NewCache keeps artifacts in dir (usually driver.Env.StateDir/artifacts) and
// fetches missing ones from src; src may be nil for a node with no uplink
// (only cached artifacts are then available).
func NewCache(dir string, src Source, log *slog.Logger) (*Cache, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("artifacts: cache %q: %w", dir, err)
	}
	return &Cache{dir: dir, src: src, log: log, verified: map[string]fileID{}, fetching: map[string]*sync.Mutex{}}, nil
}

// Path is where the cache keeps the artifact with this sha256.
func (c *Cache) Path(sha string) string { return filepath.Join(c.dir, strings.ToLower(sha)) }

// Fetch returns the cached copy of a, fetching and verifying it first if it
// is not cached. A cached copy is re-hashed once per process (it may have
// rotted on disk since it was written); a bad one is removed and fetched anew.
func (c *Cache) Fetch(ctx context.Context, a blueprint.Artifact) (string, error) {
	sha := strings.ToLower(a.SHA256)
	if len(sha) != 64 {
		return "", driver.Terminal(fmt.Errorf("artifact %q: sha256 %q is not 64 hex characters", a.Name, a.SHA256))
	}
	c.mu.Lock()
	lk := c.fetching[sha]
	if lk == nil {
		lk = &sync.Mutex{}
		c.fetching[sha] = lk
	}
	c.mu.Unlock()
	lk.Lock()
	defer lk.Unlock()

	p := c.Path(sha)
	if ok, err := c.cached(p, sha); err != nil {
		return "", err
	} else if ok {
		return p, nil
	}
	if c.src == nil {
		return "", fmt.Errorf("artifact %q (sha256 %s) is not cached and there is no uplink to fetch it", a.Name, sha)
	}
	timeout := c.FetchTimeout
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := c.src.Open(ctx, a.Name)
	if err != nil {
		return "", fmt.Errorf("artifact %q (sha256 %s) is not cached and cannot be fetched: %w", a.Name, sha, err)
	}
	defer r.Close()
	out, err := fileio.Create(p, 0o600)
	if err != nil {
		return "", err
	}
	// Nothing reaches p unless the content has the blueprint's checksum.
	defer out.Discard()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), r)
	if err != nil {
		return "", fmt.Errorf("artifact %q: fetching: %w", a.Name, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != sha {
		return "", driver.Terminal(fmt.Errorf("artifact %q: content has sha256 %s, the blueprint wants %s: %w", a.Name, got, sha, ErrChecksum))
	}
	if err := out.Commit(); err != nil {
		return "", fmt.Errorf("artifact %q: fetching: %w", a.Name, err)
	}
	c.remember(p, sha)
	c.log.Info("artifact fetched", "artifact", a.Name, "sha256", sha, "bytes", n)
	return p, nil
}

// cached reports whether p holds a verified copy of sha.
func (c *Cache) cached(p, sha string) (bool, error) {
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	id := fileID{fi.Size(), fi.ModTime().UnixNano()}
	c.mu.Lock()
	known, ok := c.verified[sha]
	c.mu.Unlock()
	if ok && known == id {
		return true, nil
	}
	got, err := FileSHA256(p)
	if err != nil {
		return false, err
	}
	if got != sha {
		c.log.Warn("cached artifact is corrupt; removing it", "path", p, "sha256", got)
		return false, os.Remove(p)
	}
	c.mu.Lock()
	c.verified[sha] = id
	c.mu.Unlock()
	return true, nil
}

func (c *Cache) remember(p, sha string) {
	if fi, err := os.Stat(p); err == nil {
		c.mu.Lock()
		c.verified[sha] = fileID{fi.Size(), fi.ModTime().UnixNano()}
		c.mu.Unlock()
	}
}

// FileSHA256 returns the hex sha256 of a file's content.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Put stores r as name in the artifacts bucket of domain (empty: streams.HubDomain),
// creating the bucket if needed, and returns the sha256 a blueprint must
// name. It is what an operator (alpha artifact put) or the hub runs.
func Put(ctx context.Context, nc *nats.Conn, domain, name string, r io.Reader) (string, error) {
	if domain == "" {
		domain = streams.HubDomain
	}
	js, err := jetstream.NewWithDomain(nc, domain)
	if err != nil {
		return "", err
	}
	obs, err := js.ObjectStore(ctx, streams.ArtifactsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: streams.ArtifactsBucket,
			Description: "artifacts named by sha256 in blueprints", Storage: jetstream.FileStorage})
	}
	if err != nil {
		return "", fmt.Errorf("object store %q in domain %q: %w", streams.ArtifactsBucket, domain, err)
	}
	h := sha256.New()
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, io.TeeReader(r, h)); err != nil {
		return "", fmt.Errorf("artifact %q: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
