package units_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/files"
	"github.com/alpha-edge/alpha/agent/units"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/enginetest"
	"github.com/alpha-edge/alpha/internal/testkit/nspawntest"
)

// A service that reads its config file at start comes after the file when it
// declares dependsOn, even with the units driver planned first.
func TestServiceStartsAfterItsConfigFile(t *testing.T) {
	m := nspawntest.Boot(t)
	state := t.TempDir()
	ud, err := units.New(units.Config{Env: driver.Env{Root: m.Root, StateDir: filepath.Join(state, "units")},
		Bus: units.DialBus(m.BusAddress)})
	check.NoError(t, err)
	fd, err := files.New(driver.Env{Root: m.Root, StateDir: filepath.Join(state, "files")})
	check.NoError(t, err)
	a := enginetest.Start(t, state, ud, fd)
	rev := a.Offer(doc(`  units:
    - name: reader.service
      dependsOn: [file:/etc/reader.conf]
      content: |
        [Service]
        ExecStart=/bin/sh -c 'cp /etc/reader.conf /var/tmp/seen && exec sleep 100000'
  files:
    - {path: /etc/reader.conf, content: "level=3\n"}
`))
	a.WaitConverged(t, rev, 30*time.Second)
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		b, err := os.ReadFile(filepath.Join(m.Root, "var/tmp/seen"))
		if err != nil {
			return err
		}
		// cp creates the file before it writes: under load a read can
		// fall between the two.
		if string(b) != "level=3\n" {
			return fmt.Errorf("the service saw %q, want the file's content", b)
		}
		return nil
	})
	if r, _ := a.Resource("unit:reader.service"); r.State != "running" || r.Repairs != 0 {
		t.Fatalf("unit:reader.service reported %+v (it should have started once, after its file)", r)
	}
}
