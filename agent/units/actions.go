package units

import "context"

// Restart restarts unit name and waits for the job (remediation).
func (d *Driver) Restart(ctx context.Context, name string) error {
	conn, err := d.systemd(ctx)
	if err != nil {
		return err
	}
	return d.job(ctx, conn, name, "restart", conn.RestartUnitContext)
}

// Stop stops unit name and waits for the job (remediation). The caller
// keeps drift repair off it for as long as it should stay stopped.
func (d *Driver) Stop(ctx context.Context, name string) error {
	conn, err := d.systemd(ctx)
	if err != nil {
		return err
	}
	return d.job(ctx, conn, name, "stop", conn.StopUnitContext)
}
