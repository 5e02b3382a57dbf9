package blueprint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxNodes bounds how many YAML nodes one document may expand to, so alias
// bombs ("billion laughs") are refused instead of eating the node's memory.
const maxNodes = 200_000

// MaxExpanded bounds the text one document may expand to: the bytes of every
// scalar, counted each time an alias repeats it. Counting nodes alone let
// 80,000 aliases of one 250 KB string through (20 GB once re-encoded), which
// took the hub down; no honest blueprint repeats more than a few times its
// own size.
const MaxExpanded = 4 * MaxSize

// Parse decodes a YAML or JSON blueprint strictly and validates it. Unknown
// fields, wrong types and invalid values are all reported together, each with
// its field path and line. The returned error wraps ErrInvalid.
func Parse(data []byte) (*Blueprint, error) {
	if len(data) > MaxSize {
		return nil, Errors{{Msg: fmt.Sprintf("document is %d bytes; the limit is %d", len(data), MaxSize)}}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, Errors{{Msg: "document is empty"}}
	}
	var bp Blueprint
	lines, err := decode(data, &bp, "a blueprint")
	if err != nil {
		return nil, err
	}
	if errs := bp.validate(lines); len(errs) > 0 {
		return nil, errs
	}
	return &bp, nil
}

// Decode decodes one YAML or JSON document strictly into out (a pointer to
// a struct of this package's shape: json tags, Duration): unknown fields and
// wrong types are all reported together with their path and line. what
// names the document in errors ("a fleet"). Validation is the caller's.
func Decode(data []byte, out any, what string) error {
	_, err := decode(data, out, what)
	return err
}

func decode(data []byte, out any, what string) (map[string]int, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		return nil, Errors{{Msg: "malformed YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Errors{{Line: extra.Line, Msg: "more than one YAML document; " + what + " is one document"}}
	}
	d := &decoder{lines: map[string]int{}}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	generic := d.value(root, reflect.TypeOf(out).Elem(), "")
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	raw, err := json.Marshal(generic)
	if err != nil {
		return nil, Errors{{Msg: err.Error()}}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		// The walk above checks every type, so this is a value a custom
		// decoder refused (a duration); report it as well as we can.
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return nil, Errors{{Path: ute.Field, Line: d.lines[ute.Field], Msg: ute.Error()}}
		}
		return nil, Errors{{Msg: err.Error()}}
	}
	return d.lines, nil
}

// decoder walks a YAML tree against the Go types, checking every field and
// building a JSON-shaped value with the scalars converted as the types want.
type decoder struct {
	errs  Errors
	lines map[string]int
	nodes int
	text  int // scalar bytes reached so far, aliases counted each time
}

var jsonUnmarshaler = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, FieldError{Path: path, Line: n.Line, Msg: fmt.Sprintf(format, args...)})
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

func (d *decoder) value(n *yaml.Node, t reflect.Type, path string) any {
	d.nodes++
	if d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.fail(n, path, "document expands to more than %d nodes", maxNodes)
		}
		return nil
	}
	if n.Kind == yaml.AliasNode {
		return d.value(n.Alias, t, path)
	}
	if d.text > MaxExpanded {
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		d.text += len(n.Value)
		if d.text > MaxExpanded {
			d.fail(n, path, "document expands to more than %d bytes of text (4x the %d-byte document limit); aliases repeat this %d-byte value", MaxExpanded, MaxSize, len(n.Value))
			return nil
		}
	}
	d.lines[path] = n.Line
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "expected text, got %s", kindName(n))
			return nil
		}
		return n.Value
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.fail(n, path, "expected a mapping, got %s", kindName(n))
			return nil
		}
		fields := jsonFields(t)
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			d.text += len(k.Value)
			f, ok := fields[k.Value]
			if !ok {
				d.fail(k, p, "unknown field %q", k.Value)
				continue
			}
			if _, dup := out[k.Value]; dup {
				d.fail(k, p, "field %q given twice", k.Value)
				continue
			}
			out[k.Value] = d.value(v, f.Type, p)
		}
		return out
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(n, path, "expected a mapping, got %s", kindName(n))
			return nil
		}
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			d.text += len(k.Value)
			if k.Kind != yaml.ScalarNode {
				d.fail(k, p, "keys must be text")
				continue
			}
			if _, dup := out[k.Value]; dup {
				d.fail(k, p, "key %q given twice", k.Value)
				continue
			}
			out[k.Value] = d.value(v, t.Elem(), p)
		}
		return out
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "expected a list, got %s", kindName(n))
			return nil
		}
		out := make([]any, len(n.Content))
		for i, c := range n.Content {
			out[i] = d.value(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
		return out
	}
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "expected %s, got %s", t.Kind(), kindName(n))
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		// Any scalar is taken as the text the user typed: mode: 0644 stays "0644".
		return n.Value
	case reflect.Bool:
		v, err := strconv.ParseBool(n.Value)
		if err != nil || n.Tag != "!!bool" {
			d.fail(n, path, "expected true or false, got %q", n.Value)
			return nil
		}
		return v
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v, err := strconv.ParseInt(n.Value, 10, t.Bits())
		if err != nil {
			d.fail(n, path, "expected an integer, got %q", n.Value)
			return nil
		}
		return v
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v, err := strconv.ParseUint(n.Value, 10, t.Bits())
		if err != nil {
			d.fail(n, path, "expected a non-negative integer, got %q", n.Value)
			return nil
		}
		return v
	case reflect.Float32, reflect.Float64:
		v, err := strconv.ParseFloat(n.Value, 64)
		if err != nil {
			d.fail(n, path, "expected a number, got %q", n.Value)
			return nil
		}
		return v
	}
	d.fail(n, path, "unsupported field type %s", t)
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// jsonFields maps a struct's JSON names to its fields.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if f.Anonymous && f.Type.Kind() == reflect.Struct && f.Tag.Get("json") == "" {
			// Embedded structs (Duration wraps time.Duration) are not fields.
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}
