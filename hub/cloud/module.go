package cloud

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/streams"
)

// maxModule bounds a module archive and what it expands to.
const maxModule = 64 << 20

// fetchModule loads a module archive from the hub's artifacts object store,
// checks its sha256 and unpacks it into dir.
func (r *Reconciler) fetchModule(ctx context.Context, a *blueprint.Artifact, dir *os.Root) error {
	obs, err := r.cfg.JS.ObjectStore(ctx, streams.ArtifactsBucket)
	if err != nil {
		return fmt.Errorf("module %q: artifacts bucket: %w", a.Name, err)
	}
	info, err := obs.GetInfo(ctx, a.Name)
	if err != nil {
		return fmt.Errorf("module %q: %w", a.Name, err)
	}
	if info.Size > maxModule {
		return fmt.Errorf("module %q is %d bytes; the limit is %d", a.Name, info.Size, maxModule)
	}
	data, err := obs.GetBytes(ctx, a.Name)
	if err != nil {
		return fmt.Errorf("module %q: %w", a.Name, err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, a.SHA256) {
		return fmt.Errorf("module %q has sha256 %s, the blueprint says %s", a.Name, got, a.SHA256)
	}
	if err := untar(data, dir); err != nil {
		return fmt.Errorf("module %q: %w", a.Name, err)
	}
	return nil
}

// untar unpacks a tar or tar.gz archive of regular files and directories
// into dir. Anything that could point outside dir is refused; dir being an
// os.Root, so is a symlink left in it by an earlier run.
func untar(data []byte, dir *os.Root) error {
	var rd io.Reader = bytes.NewReader(data)
	if len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b {
		gz, err := gzip.NewReader(rd)
		if err != nil {
			return err
		}
		rd = gz
	}
	tr := tar.NewReader(rd)
	var total int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading archive: %w", err)
		}
		name := filepath.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if !filepath.IsLocal(name) {
			return fmt.Errorf("archive entry %q points outside the module", h.Name)
		}
		p := name
		switch h.Typeflag {
		case tar.TypeDir:
			if err := dir.MkdirAll(p, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			total += h.Size
			if total > maxModule {
				return fmt.Errorf("archive expands to more than %d bytes", maxModule)
			}
			if err := dir.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return err
			}
			f, err := dir.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, io.LimitReader(tr, h.Size))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("archive entry %q is not a regular file or directory", h.Name)
		}
	}
}
