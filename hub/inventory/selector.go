package inventory

import (
	"fmt"
	"sort"
	"strings"
)

// Selector matches a node's labels. Its syntax is Kubernetes' equality
// subset, comma-separated terms that must all hold:
//
//	role=meter        label role is meter (== works too)
//	tier!=test        label tier is absent or not test
//	gpu               label gpu is present
//	!gpu              label gpu is absent
//
// The empty selector matches every node.
type Selector []term

type term struct {
	key, value string
	op         string // "=", "!=", "exists", "!exists"
}

// ParseSelector parses s; an error names the term.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	for raw := range strings.SplitSeq(s, ",") {
		t := strings.TrimSpace(raw)
		if t == "" {
			continue
		}
		var tm term
		switch {
		case strings.Contains(t, "!="):
			k, v, _ := strings.Cut(t, "!=")
			tm = term{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: "!="}
		case strings.Contains(t, "=="):
			k, v, _ := strings.Cut(t, "==")
			tm = term{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: "="}
		case strings.Contains(t, "="):
			k, v, _ := strings.Cut(t, "=")
			tm = term{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: "="}
		case strings.HasPrefix(t, "!"):
			tm = term{key: strings.TrimSpace(t[1:]), op: "!exists"}
		default:
			tm = term{key: t, op: "exists"}
		}
		if err := ValidKey(tm.key); err != nil {
			return nil, fmt.Errorf("selector term %q: %w", t, err)
		}
		if strings.ContainsAny(tm.value, "=!") {
			return nil, fmt.Errorf("selector term %q: value %q may not contain = or !", t, tm.value)
		}
		sel = append(sel, tm)
	}
	return sel, nil
}

// Matches reports whether labels satisfy every term.
func (s Selector) Matches(labels map[string]string) bool {
	for _, t := range s {
		v, ok := labels[t.key]
		switch t.op {
		case "=":
			if !ok || v != t.value {
				return false
			}
		case "!=":
			if ok && v == t.value {
				return false
			}
		case "exists":
			if !ok {
				return false
			}
		case "!exists":
			if ok {
				return false
			}
		}
	}
	return true
}

// String is the canonical form of the selector.
func (s Selector) String() string {
	parts := make([]string, 0, len(s))
	for _, t := range s {
		switch t.op {
		case "exists":
			parts = append(parts, t.key)
		case "!exists":
			parts = append(parts, "!"+t.key)
		default:
			parts = append(parts, t.key+t.op+t.value)
		}
	}
	return strings.Join(parts, ",")
}

// ValidKey checks a label key: what selectors and `alpha node label` accept.
func ValidKey(k string) error {
	if k == "" {
		return fmt.Errorf("label key is empty")
	}
	if len(k) > 63 {
		return fmt.Errorf("label key %q is longer than 63 characters", k)
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/", r)) {
			return fmt.Errorf("label key %q: character %q not allowed (letters, digits, . _ - /)", k, r)
		}
	}
	return nil
}

// ValidValue checks a label value.
func ValidValue(k, v string) error {
	if len(v) > 63 {
		return fmt.Errorf("label %s: value %q is longer than 63 characters", k, v)
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-", r)) {
			return fmt.Errorf("label %s: value %q: character %q not allowed (letters, digits, . _ -)", k, v, r)
		}
	}
	return nil
}

// ParseLabels parses key=value arguments (and key- to remove a label) as
// `alpha node label` takes them.
func ParseLabels(args []string) (set map[string]string, remove []string, err error) {
	set = map[string]string{}
	for _, a := range args {
		if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
			if err := ValidKey(k); err != nil {
				return nil, nil, err
			}
			remove = append(remove, k)
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, nil, fmt.Errorf("label %q: want key=value (or key- to remove)", a)
		}
		if err := ValidKey(k); err != nil {
			return nil, nil, err
		}
		if reserved(k) {
			return nil, nil, fmt.Errorf("label %q: key %q is reserved (site, node and facts.* are set by Alpha)", a, k)
		}
		if err := ValidValue(k, v); err != nil {
			return nil, nil, err
		}
		set[k] = v
	}
	sort.Strings(remove)
	return set, remove, nil
}

func reserved(k string) bool {
	return k == "site" || k == "node" || strings.HasPrefix(k, "facts.")
}
