package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/alpha-edge/alpha/internal/fileio"
)

// store keeps the desired and applied revisions on disk, each written
// atomically (temp file, fsync, rename) so a power cut never leaves half a
// blueprint behind.
type store struct{ dir string }

type persisted struct {
	Revision uint64 `json:"revision"`
	Deleted  bool   `json:"deleted,omitempty"`
	Data     []byte `json:"data,omitempty"`
}

func openStore(dir string) (*store, error) {
	if dir == "" {
		return nil, errors.New("engine: a state directory is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("engine: state directory: %w", err)
	}
	return &store{dir: dir}, nil
}

func (s *store) load(name string) (*revision, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, name+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s.json: %w", name, err)
	}
	return &revision{Rev: p.Revision, Data: p.Data, Deleted: p.Deleted}, nil
}

func (s *store) save(name string, r *revision) error {
	b, err := json.Marshal(persisted{Revision: r.Rev, Deleted: r.Deleted, Data: r.Data})
	if err != nil {
		return err
	}
	return fileio.WriteFile(filepath.Join(s.dir, name+".json"), b, 0o600)
}
