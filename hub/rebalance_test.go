package hub

import (
	"testing"
	"time"
)

func TestLinksToMove(t *testing.T) {
	settled := 2 * rebalanceSettle
	for _, tc := range []struct {
		name string
		c    linkCounts
		want int
	}{
		{"a member missing", linkCounts{Own: 18, Peers: map[string]int{"hub2": 0}, Members: 3, Uptime: settled}, 0},
		{"no peer answered", linkCounts{Own: 18, Peers: map[string]int{}, Members: 3, Uptime: settled}, 0},
		{"first minute", linkCounts{Own: 18, Peers: map[string]int{"hub2": 0, "hub3": 0}, Members: 3, Uptime: rebalanceSettle - time.Second}, 0},
		{"even", linkCounts{Own: 6, Peers: map[string]int{"hub2": 6, "hub3": 6}, Members: 3, Uptime: settled}, 0},
		// share 6, margin 2: 8 is within it.
		{"within margin", linkCounts{Own: 8, Peers: map[string]int{"hub2": 8, "hub3": 2}, Members: 3, Uptime: settled}, 0},
		{"just over margin", linkCounts{Own: 9, Peers: map[string]int{"hub2": 9, "hub3": 0}, Members: 3, Uptime: settled}, 1},
		// share 10, margin 2, excess 10: half of it.
		{"excess 10", linkCounts{Own: 20, Peers: map[string]int{"hub2": 10, "hub3": 0}, Members: 3, Uptime: settled}, 5},
		// share 100, margin 10: 110 is within it, 111 moves 5.
		{"large within margin", linkCounts{Own: 110, Peers: map[string]int{"hub2": 100, "hub3": 90}, Members: 3, Uptime: settled}, 0},
		{"large over margin", linkCounts{Own: 111, Peers: map[string]int{"hub2": 100, "hub3": 89}, Members: 3, Uptime: settled}, 5},
		{"alone", linkCounts{Own: 50, Peers: map[string]int{}, Members: 1, Uptime: settled}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := linksToMove(tc.c)
			if got != tc.want {
				t.Fatalf("linksToMove(%+v) = %d, want %d", tc.c, got, tc.want)
			}
			total := tc.c.Own
			for _, n := range tc.c.Peers {
				total += n
			}
			share := (total + tc.c.Members - 1) / max(tc.c.Members, 1)
			if excess := tc.c.Own - share; got > 0 && got > (excess+1)/2 {
				t.Fatalf("moves %d of an excess of %d: more than half", got, excess)
			}
		})
	}
}

// Moves that do not stick (the dropped sites can reach this member only,
// and come straight back) slow the checks down, doubling up to maxSlow;
// a move that sticks resets them.
func TestRebalanceBacksOffWhenLinksComeBack(t *testing.T) {
	slow := 1
	for range 10 {
		slow = nextSlow(slow, move{own: 20, moved: 6}, 20) // all came back
	}
	if slow != maxSlow {
		t.Fatalf("after 10 moves that came back: %d intervals between checks, want %d", slow, maxSlow)
	}
	if got := nextSlow(slow, move{own: 20, moved: 6}, 17); got != 1 {
		t.Fatalf("a move that stuck (20 -> 17 after dropping 6): %d, want 1", got)
	}
	if got := nextSlow(4, move{own: 20, moved: 6}, 18); got != 8 {
		t.Fatalf("a move that mostly came back (20 -> 18 after dropping 6): %d, want 8", got)
	}
	if got := nextSlow(1, move{own: 20, moved: 0}, 20); got != 2 {
		t.Fatalf("a move that dropped nothing: %d, want 2", got)
	}
}
