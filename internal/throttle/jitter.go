package throttle

import (
	"math/rand/v2"
	"time"
)

// Jitter spreads d by up to +-percent%, so a fleet (or a hub's many
// configurations) that starts together does not act in lockstep.
func Jitter(d time.Duration, percent int) time.Duration {
	if d <= 0 || percent <= 0 {
		return d
	}
	span := d * time.Duration(percent) / 100
	return d - span + time.Duration(rand.Int64N(int64(2*span)+1))
}
