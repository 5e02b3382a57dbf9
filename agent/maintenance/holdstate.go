package maintenance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/alpha-edge/alpha/internal/fileio"
)

// StateFile is the file, in the agent's state directory, that keeps the
// hold state the node last saw, so a hold survives a restart of the agent
// while the holds bucket is gone, empty or out of reach.
const StateFile = "holds.json"

// stateVersion is the format of StateFile; a file of another version is
// not understood and fails safe.
const stateVersion = 1

// holdState is StateFile's content: the node's hold, or the release that
// ended the last one.
type holdState struct {
	Version int    `json:"version"`
	Key     string `json:"key"`
	Hold    *Hold  `json:"hold,omitempty"`
	// Released is when the key was released (the bucket's timestamp of the
	// delete or purge); zero with no hold: never held.
	Released time.Time `json:"released,omitzero"`
}

// Load returns the node's holds as last persisted in the state directory
// dir (file StateFile), in force at once: a hold seen before a restart
// holds until it expires or the bucket releases or replaces it (see
// Holds.Watch), whatever became of the bucket meanwhile. dir "" keeps the
// state in memory only (tools and tests).
//
// A state file that cannot be read or understood fails safe: the node is
// held for MaxHold from now, with a reason naming the file and the error,
// logged at ERROR; that hold is written back so a restart does not extend
// it. The file is read and written inside dir only (os.Root): a symlink
// planted there cannot lead out of it. Load fails only on a bad site or
// node, or a state directory it cannot create.
func Load(dir, site, node string, log *slog.Logger) (*Holds, error) {
	key, err := Key(site, node)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	h := &Holds{key: key, site: site, node: node, dir: dir, log: log.With("key", key)}
	if dir == "" {
		return h, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("holds: state directory %q: %w", dir, err)
	}
	st, err := h.read()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return h, nil
	case err != nil:
		path := filepath.Join(dir, StateFile)
		now := time.Now().UTC()
		hold := &Hold{Site: site, Node: node, Created: now, Until: now.Add(MaxHold),
			Reason: fmt.Sprintf("hold state %s unreadable, held for safety: %v", path, err)}
		h.log.Error("hold state unreadable; the node is held for the maximum until the holds bucket says otherwise",
			"file", path, "err", err, "until", hold.Until)
		h.set(hold, time.Time{})
		return h, nil
	case st.Hold == nil:
		h.saved, _ = json.Marshal(st)
		return h, nil
	case !st.Hold.Active(time.Now()):
		h.log.Info("hold expired while the agent was down", "hold", st.Hold.String())
		return h, nil
	}
	if st.Key != key {
		// The node was renamed over the same state: the hold was this
		// machine's, so it stays until it ends.
		h.log.Warn("hold state was kept for another key; kept in force", "file_key", st.Key)
	}
	h.log.Info("hold in force from the node's state", "hold", st.Hold.String())
	h.hold = st.Hold
	h.saved, _ = json.Marshal(st)
	return h, nil
}

// read reads and checks the state file.
func (h *Holds) read() (holdState, error) {
	var st holdState
	root, err := os.OpenRoot(h.dir)
	if err != nil {
		return st, err
	}
	defer root.Close()
	b, err := root.ReadFile(StateFile)
	if err != nil {
		return st, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return st, err
	}
	if st.Version != stateVersion {
		return st, fmt.Errorf("version %d, want %d", st.Version, stateVersion)
	}
	// A hold without its creation time has no MaxHold bound: apply always
	// sets it, so its absence means the file is not what was written.
	if st.Hold != nil && (st.Hold.Created.IsZero() || st.Hold.Until.IsZero()) {
		return st, fmt.Errorf("hold without created or until: %+v", *st.Hold)
	}
	return st, nil
}

// save writes the state durably (temp file, fsync, rename, mode 0600),
// unless it is what the file already holds. The caller holds h.wmu.
func (h *Holds) save(hold *Hold, released time.Time) {
	if h.dir == "" {
		return
	}
	st := holdState{Version: stateVersion, Key: h.key, Hold: hold}
	if hold == nil {
		st.Released = released.UTC()
	}
	b, err := json.Marshal(st)
	if err != nil || bytes.Equal(b, h.saved) {
		return
	}
	root, err := os.OpenRoot(h.dir)
	if err == nil {
		err = fileio.Rooted(root).WriteFile(StateFile, b, 0o600)
		root.Close()
	}
	if err != nil {
		// The node's behaviour is right until the next restart; after it,
		// the state before this change is loaded.
		h.log.Error("hold state not saved; a restart would load the one before", "file", filepath.Join(h.dir, StateFile), "err", err)
		return
	}
	h.saved = b
}
