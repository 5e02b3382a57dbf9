package containers

import (
	"context"
	"fmt"

	"github.com/containers/podman/v5/pkg/bindings/containers"
)

// Restart gracefully restarts the agent's container name (remediation).
func (d *Driver) Restart(ctx context.Context, name string) error {
	cctx, id, err := d.find(ctx, name)
	if err != nil {
		return err
	}
	if err := containers.Restart(cctx, id, new(containers.RestartOptions).WithTimeout(10)); err != nil {
		return fmt.Errorf("container %q: restart: %w", name, err)
	}
	return nil
}

// Stop gracefully stops the agent's container name (remediation). The
// caller keeps drift repair off it for as long as it should stay stopped.
func (d *Driver) Stop(ctx context.Context, name string) error {
	cctx, id, err := d.find(ctx, name)
	if err != nil {
		return err
	}
	if err := containers.Stop(cctx, id, new(containers.StopOptions).WithTimeout(10)); err != nil {
		return fmt.Errorf("container %q: stop: %w", name, err)
	}
	return nil
}

// find resolves a managed container's full id (never a name: see start).
func (d *Driver) find(ctx context.Context, name string) (context.Context, string, error) {
	obs, err := d.observe(ctx)
	if err != nil {
		return nil, "", err
	}
	o, ok := obs[name]
	if !ok {
		return nil, "", fmt.Errorf("container %q is not running under the agent", name)
	}
	cctx, err := d.withConn(ctx)
	return cctx, o.id, err
}
