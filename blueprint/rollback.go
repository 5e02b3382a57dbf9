package blueprint

// Rollback is the node's own guard on a new revision: the revision must
// apply and keep the solution's health at or above MinHealth for For, all
// within Deadline of the node starting on it; otherwise the node returns on
// its own, uplink or not, to its last-known-good revision and does not try
// this one again. `alpha fleet apply` fills it from the rollout's gate.
type Rollback struct {
	MinHealth float64  `json:"minHealth" doc:"Solution health (0..1) the revision must reach and keep."`
	For       Duration `json:"for,omitempty" doc:"How long health must hold at or above minHealth before the revision counts as good."`
	Deadline  Duration `json:"deadline" doc:"Time a new revision has, from the node starting on it, to apply and be good; then the node rolls back."`
}

func (c *checker) rollback(r *Rollback) {
	if r == nil {
		return
	}
	if r.MinHealth < 0 || r.MinHealth > 1 {
		c.add("spec.rollback.minHealth", "%v must be between 0 and 1", r.MinHealth)
	}
	if r.For.Duration < 0 {
		c.add("spec.rollback.for", "%s must not be negative", r.For)
	}
	if r.Deadline.Duration <= 0 {
		c.add("spec.rollback.deadline", "%s must be positive", r.Deadline)
	} else if r.For.Duration >= r.Deadline.Duration {
		c.add("spec.rollback.for", "%s must be shorter than deadline %s", r.For, r.Deadline)
	}
}
