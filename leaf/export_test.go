package leaf

import "time"

// SetResetAnswerWait sets how long this process's mirrors await a reset's
// answer (leaf/tune.go) and returns a function that restores it. Set it
// before any leaf starts; restore after they stopped.
func SetResetAnswerWait(d time.Duration) (restore func()) {
	old := srcDurableConsumerWaitTime
	srcDurableConsumerWaitTime = d
	return func() { srcDurableConsumerWaitTime = old }
}
