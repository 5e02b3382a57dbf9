package files

import (
	"context"
	"path"
	"path/filepath"
	"strings"

	"github.com/fsnotify/fsnotify"
)

// notifyWatchSet tells a running Watch that the set of managed files changed.
func (d *Driver) notifyWatchSet() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// Watch uses inotify on the parent directories of managed files, so a file
// edited, replaced or deleted by hand is noticed at once. Directories that do
// not exist yet are watched from their nearest existing ancestor.
func (d *Driver) Watch(ctx context.Context, notify func(reason string)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	watching := map[string]bool{}
	managed := map[string]bool{}
	refresh := func() {
		d.mu.Lock()
		paths := append([]string(nil), d.watched...)
		d.mu.Unlock()
		want := map[string]bool{}
		managed = map[string]bool{}
		for _, p := range paths {
			abs := filepath.Join(d.env.Root, p)
			managed[abs] = true
			dir := filepath.Dir(abs)
			for {
				if err := w.Add(dir); err == nil {
					want[dir] = true
					break
				}
				parent := filepath.Dir(dir)
				if parent == dir || !strings.HasPrefix(parent, filepath.Clean(d.env.Root)) {
					break
				}
				dir = parent
			}
		}
		for dir := range watching {
			if !want[dir] {
				w.Remove(dir)
			}
		}
		watching = want
	}
	refresh()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.changed:
			refresh()
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if strings.HasPrefix(path.Base(ev.Name), ".alpha-") {
				continue // our own temp files
			}
			if relevant(managed, ev.Name) {
				notify("files: " + ev.Op.String() + " " + ev.Name)
				if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Remove) {
					refresh()
				}
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			d.env.Log.Warn("files: inotify", "err", err)
		}
	}
}

// relevant reports whether name is a managed file or a directory on the way
// to one (a parent created or removed by hand).
func relevant(managed map[string]bool, name string) bool {
	if managed[name] {
		return true
	}
	prefix := name + string(filepath.Separator)
	for p := range managed {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}
