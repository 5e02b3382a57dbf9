package telemetry

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/streams"
)

// ApplyRetention sets the blueprint's retention (age, bytes) on the site's
// TELEMETRY stream when it differs; zero fields keep the leaf's limits. It
// is idempotent. The limits are the site's, so nodes of one site should
// declare the same retention; the last one applied wins.
func ApplyRetention(ctx context.Context, conn *nats.Conn, site string, r blueprint.Retention) error {
	if r.MaxAge.Duration == 0 && r.MaxBytes == 0 {
		return nil
	}
	js, err := jetstream.NewWithDomain(conn, site)
	if err != nil {
		return err
	}
	st, err := js.Stream(ctx, streams.TelemetryStream)
	if err != nil {
		return fmt.Errorf("telemetry: site stream %s: %w", streams.TelemetryStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	cfg := info.Config
	if r.MaxAge.Duration > 0 {
		cfg.MaxAge = r.MaxAge.Duration
	}
	if r.MaxBytes > 0 {
		cfg.MaxBytes = r.MaxBytes
	}
	if cfg.MaxAge == info.Config.MaxAge && cfg.MaxBytes == info.Config.MaxBytes {
		return nil
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("telemetry: retention maxAge %s maxBytes %d: %w", r.MaxAge.Duration, r.MaxBytes, err)
	}
	return nil
}
