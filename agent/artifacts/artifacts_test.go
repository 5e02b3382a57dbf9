package artifacts_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/hubtest"
)

func TestFetchVerifyCacheOffline(t *testing.T) {
	s, nc := hubtest.Start(t)
	content := bytes.Repeat([]byte("edge binary "), 100_000)
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	hubtest.Put(t, nc, "meter-1.0", content)
	ctx := context.Background()

	dir := t.TempDir()
	c, err := artifacts.NewCache(dir, artifacts.NewObjectStore(nc, "", ""), nil)
	check.NoError(t, err)
	p, err := c.Fetch(ctx, blueprint.Artifact{Name: "meter-1.0", SHA256: sha})
	check.NoError(t, err)
	got, err := os.ReadFile(p)
	check.NoError(t, err)
	check.Equal(t, bytes.Equal(got, content), true)

	t.Run("wrong sha256 is terminal", func(t *testing.T) {
		_, err := c.Fetch(ctx, blueprint.Artifact{Name: "meter-1.0", SHA256: strings.Repeat("a", 64)})
		if !errors.Is(err, driver.ErrTerminal) || !errors.Is(err, artifacts.ErrChecksum) {
			t.Fatalf("want a terminal checksum error, got %v", err)
		}
		if !strings.Contains(err.Error(), sha) || !strings.Contains(err.Error(), `"meter-1.0"`) {
			t.Fatalf("error does not name the artifact and both digests: %v", err)
		}
	})
	t.Run("missing object", func(t *testing.T) {
		_, err := c.Fetch(ctx, blueprint.Artifact{Name: "nope", SHA256: strings.Repeat("b", 64)})
		if !errors.Is(err, artifacts.ErrNotFound) || errors.Is(err, driver.ErrTerminal) {
			t.Fatalf("want a retryable not-found error, got %v", err)
		}
	})

	// The hub goes away; a new process (new cache over the same directory)
	// still gets the artifact, re-verified, without any network.
	nc.Close()
	s.Shutdown()
	c2, err := artifacts.NewCache(dir, artifacts.NewObjectStore(nc, "", ""), nil)
	check.NoError(t, err)
	start := time.Now()
	p2, err := c2.Fetch(ctx, blueprint.Artifact{Name: "meter-1.0", SHA256: sha})
	check.NoError(t, err)
	check.Equal(t, p2, p)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("cached fetch took %v", d)
	}

	// A corrupted cache entry is not trusted offline.
	check.NoError(t, os.WriteFile(p, []byte("rot"), 0o600))
	c3, err := artifacts.NewCache(dir, nil, nil)
	check.NoError(t, err)
	if _, err := c3.Fetch(ctx, blueprint.Artifact{Name: "meter-1.0", SHA256: sha}); err == nil {
		t.Fatal("a corrupt cached artifact was served")
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("the corrupt cached artifact was kept")
	}
}

func TestPutReturnsTheBlueprintDigest(t *testing.T) {
	_, nc := hubtest.Start(t)
	content := []byte("an executable")
	sum, err := artifacts.Put(context.Background(), nc, "", "exe", bytes.NewReader(content))
	check.NoError(t, err)
	want := sha256.Sum256(content)
	check.Equal(t, sum, hex.EncodeToString(want[:]))
	c, err := artifacts.NewCache(t.TempDir(), artifacts.NewObjectStore(nc, "", ""), nil)
	check.NoError(t, err)
	_, err = c.Fetch(context.Background(), blueprint.Artifact{Name: "exe", SHA256: sum})
	check.NoError(t, err)
}

// An air-gapped site can be seeded by hand (a USB stick): a file named by
// its sha256 in the cache directory is used without any hub.
func TestSeededCacheNeedsNoHub(t *testing.T) {
	dir := t.TempDir()
	content := []byte("image archive brought on a stick")
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	check.NoError(t, os.WriteFile(filepath.Join(dir, sha), content, 0o600))
	c, err := artifacts.NewCache(dir, nil, nil)
	check.NoError(t, err)
	p, err := c.Fetch(context.Background(), blueprint.Artifact{Name: "anything", SHA256: strings.ToUpper(sha)})
	check.NoError(t, err)
	check.Equal(t, p, filepath.Join(dir, sha))
}
