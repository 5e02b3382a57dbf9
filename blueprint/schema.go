package blueprint

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
)

// Schema returns a JSON Schema (draft 2020-12) for blueprints, generated from
// the same Go types Parse decodes into, so the two cannot disagree.
func Schema() ([]byte, error) {
	s := schemaFor(reflect.TypeOf(Blueprint{}))
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = "alpha/v1/blueprint.json"
	s["title"] = "Alpha blueprint"
	props := s["properties"].(map[string]any)
	props["apiVersion"].(map[string]any)["const"] = APIVersion
	props["kind"].(map[string]any)["const"] = Kind
	return json.MarshalIndent(s, "", "  ")
}

func schemaFor(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeOf(Duration{}) {
		return map[string]any{"type": "string", "pattern": `^([0-9.]+(ns|us|µs|ms|s|m|h))+$`}
	}
	switch t.Kind() {
	case reflect.Struct:
		props := map[string]any{}
		var required []string
		for name, f := range jsonFields(t) {
			fs := schemaFor(f.Type)
			if d := f.Tag.Get("doc"); d != "" {
				fs["description"] = d
			}
			props[name] = fs
			if !strings.Contains(f.Tag.Get("json"), "omitempty") {
				required = append(required, name)
			}
		}
		out := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if len(required) > 0 {
			sort.Strings(required)
			out["required"] = required
		}
		return out
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaFor(t.Elem())}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaFor(t.Elem())}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	}
	return map[string]any{"type": "integer"}
}
