package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/alpha-edge/alpha/internal/fileio"
	"github.com/alpha-edge/alpha/streams"
)

// store keeps the desired, applied and last-known-good revisions and the
// rollback guard's state on disk, each written
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

// guardState is the rollback guard's persisted part: the trial's clock, so
// a restart does not give a failing revision a fresh deadline, and the
// refused revision, so it is never tried again.
type guardState struct {
	Trial      *trial              `json:"trial,omitempty"`
	RolledBack *streams.RolledBack `json:"rolledBack,omitempty"`
}

// loadGuard reads the guard's state; found is false when none was ever
// written (a node that never ran a trial, or state from before the guard).
func (s *store) loadGuard() (g guardState, found bool, err error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "guard.json"))
	if errors.Is(err, os.ErrNotExist) {
		return g, false, nil
	}
	if err != nil {
		return g, false, err
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return g, true, fmt.Errorf("guard.json: %w", err)
	}
	return g, true, nil
}

func (s *store) saveGuard(g guardState) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return fileio.WriteFile(filepath.Join(s.dir, "guard.json"), b, 0o600)
}
