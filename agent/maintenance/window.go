package maintenance

import (
	"fmt"
	"time"

	"github.com/alpha-edge/alpha/blueprint"
)

var dayNames = map[time.Weekday]string{
	time.Monday: "mon", time.Tuesday: "tue", time.Wednesday: "wed", time.Thursday: "thu",
	time.Friday: "fri", time.Saturday: "sat", time.Sunday: "sun",
}

// occurrence is one opening of a weekly window.
type occurrence struct{ start, end time.Time }

// occurrences lists the openings that start between one day before t and
// eight days after it, in the site's zone: enough to find the window t is in
// (one may have started yesterday and run past midnight) and the next one.
func occurrences(m *blueprint.Maintenance, t time.Time) ([]occurrence, error) {
	loc := time.UTC
	if m.TimeZone != "" {
		l, err := time.LoadLocation(m.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("spec.maintenance.timeZone: %q: %w", m.TimeZone, err)
		}
		loc = l
	}
	lt := t.In(loc)
	var out []occurrence
	for off := -1; off <= 8; off++ {
		day := time.Date(lt.Year(), lt.Month(), lt.Day()+off, 0, 0, 0, 0, loc)
		name := dayNames[day.Weekday()]
		for i, w := range m.Windows {
			found := false
			for _, d := range w.Days {
				found = found || d == name
			}
			if !found {
				continue
			}
			sh, sm, err1 := clock(w.Start)
			eh, em, err2 := clock(w.End)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("spec.maintenance.windows[%d]: start %q or end %q is not HH:MM", i, w.Start, w.End)
			}
			start := time.Date(day.Year(), day.Month(), day.Day(), sh, sm, 0, 0, loc)
			end := time.Date(day.Year(), day.Month(), day.Day(), eh, em, 0, 0, loc)
			if !end.After(start) {
				end = time.Date(day.Year(), day.Month(), day.Day()+1, eh, em, 0, 0, loc)
			}
			out = append(out, occurrence{start, end})
		}
	}
	return out, nil
}

func clock(s string) (int, int, error) {
	var h, m int
	if _, err := fmt.Sscanf(s, "%d:%d", &h, &m); err != nil || h < 0 || h > 23 || m < 0 || m > 59 {
		return 0, 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return h, m, nil
}

// Open reports whether t falls in one of the blueprint's windows, and when
// the answer changes: the end of the current window, or the start of the
// next one (zero if no window ever opens). No windows at all means always
// open.
func Open(m *blueprint.Maintenance, t time.Time) (open bool, change time.Time, err error) {
	if m == nil || len(m.Windows) == 0 {
		return true, time.Time{}, nil
	}
	occ, err := occurrences(m, t)
	if err != nil {
		return false, time.Time{}, err
	}
	for _, o := range occ {
		if !t.Before(o.start) && t.Before(o.end) {
			if change.IsZero() || o.end.After(change) {
				change = o.end
			}
			open = true
		}
	}
	if open {
		return true, change, nil
	}
	for _, o := range occ {
		if o.start.After(t) && (change.IsZero() || o.start.Before(change)) {
			change = o.start
		}
	}
	return false, change, nil
}
