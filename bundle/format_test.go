package bundle_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/bundle"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// fmtBundle writes a two-entry bundle signed with seed and returns its
// bytes.
func fmtBundle(t *testing.T, seed []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := bundle.NewWriter(&buf, bundle.Manifest{Format: bundle.Format, Site: "s1"}, nil)
	for _, e := range []struct{ name, content string }{{"artifacts/a", "artifact bytes"}, {"kv/blueprints/s1.n1", "value"}} {
		check.NoError(t, w.Add(bundle.Entry{Name: e.name, Kind: bundle.KindKV}, int64(len(e.content)), strings.NewReader(e.content)))
	}
	_, err := w.Close(seed)
	check.NoError(t, err)
	return buf.Bytes()
}

// rewrite copies a bundle's tar entries through edit (nil drops one) and
// may append extra ones.
func rewrite(t *testing.T, raw []byte, edit func(name string, b []byte) []byte, extra map[string]string) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		hd, err := tr.Next()
		if err == io.EOF {
			break
		}
		check.NoError(t, err)
		b, err := io.ReadAll(tr)
		check.NoError(t, err)
		if b = edit(hd.Name, b); b == nil {
			continue
		}
		check.NoError(t, tw.WriteHeader(&tar.Header{Name: hd.Name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}))
		_, err = tw.Write(b)
		check.NoError(t, err)
	}
	for name, content := range extra {
		check.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}))
		_, err := tw.Write([]byte(content))
		check.NoError(t, err)
	}
	check.NoError(t, tw.Close())
	return out.Bytes()
}

// Verify refuses every way a file can differ from what was signed.
func TestVerifyRefuses(t *testing.T) {
	seed, pub, err := sign.NewPublisher()
	check.NoError(t, err)
	_, other, err := sign.NewPublisher()
	check.NoError(t, err)
	good := fmtBundle(t, seed)
	same := func(_ string, b []byte) []byte { return b }
	for _, c := range []struct {
		name    string
		raw     []byte
		trusted string
		want    error
	}{
		{"good", good, pub, nil},
		{"untrusted signer", good, other, bundle.ErrUntrusted},
		{"content changed", rewrite(t, good, func(n string, b []byte) []byte {
			if n == "kv/blueprints/s1.n1" {
				return []byte("VALUE")
			}
			return b
		}, nil), pub, bundle.ErrTampered},
		{"manifest changed", rewrite(t, good, func(n string, b []byte) []byte {
			if n == bundle.ManifestName {
				return bytes.Replace(b, []byte(`"s1"`), []byte(`"s2"`), 1)
			}
			return b
		}, nil), pub, bundle.ErrSignature},
		{"entry dropped", rewrite(t, good, func(n string, b []byte) []byte {
			if n == "artifacts/a" {
				return nil
			}
			return b
		}, nil), pub, bundle.ErrTruncated},
		{"entry added", rewrite(t, good, same, map[string]string{"kv/blueprints/s1.n2": "x"}), pub, bundle.ErrTampered},
		{"no trailer", good[:len(good)/3], pub, bundle.ErrTruncated},
		{"not a bundle", []byte("hello, world, this is not a tar file at all"), pub, bundle.ErrNotBundle},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.alpha")
			check.NoError(t, os.WriteFile(path, c.raw, 0o644))
			m, err := bundle.Verify(path, bundle.Format, []string{c.trusted})
			if c.want == nil {
				check.NoError(t, err)
				check.Equal(t, len(m.Entries), 2)
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	// An uplink bundle never opens as a downlink one.
	path := filepath.Join(t.TempDir(), "b.alpha")
	check.NoError(t, os.WriteFile(path, good, 0o644))
	if _, err := bundle.Verify(path, bundle.UplinkFormat, []string{pub}); !errors.Is(err, bundle.ErrNotBundle) {
		t.Fatalf("downlink bundle read as uplink: %v", err)
	}
}
