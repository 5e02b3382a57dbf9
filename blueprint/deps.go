package blueprint

// Dependencies maps each resource id of the blueprint to the ids it declares
// in dependsOn. The engine orders changes by it.
func (b *Blueprint) Dependencies() map[string][]string {
	deps := map[string][]string{}
	for _, f := range b.Spec.Files {
		deps[ResourceID("file", f.Path)] = f.DependsOn
	}
	for _, c := range b.Spec.Containers {
		deps[ResourceID("container", c.Name)] = c.DependsOn
	}
	for _, u := range b.Spec.Units {
		deps[ResourceID("unit", u.Name)] = u.DependsOn
	}
	return deps
}

// cycle returns one resource id on a dependsOn cycle, or "".
func cycle(deps map[string][]string) string {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var visit func(id string) string
	visit = func(id string) string {
		switch state[id] {
		case visiting:
			return id
		case done:
			return ""
		}
		state[id] = visiting
		for _, d := range deps[id] {
			if c := visit(d); c != "" {
				return c
			}
		}
		state[id] = done
		return ""
	}
	for id := range deps {
		if c := visit(id); c != "" {
			return c
		}
	}
	return ""
}
