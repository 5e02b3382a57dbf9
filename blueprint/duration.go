package blueprint

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration written as Go duration text ("30s", "2h").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads "30s" style text.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be text like \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// IsZero lets omitempty-style checks work.
func (d Duration) IsZero() bool { return d.Duration == 0 }
