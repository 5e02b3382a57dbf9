package blueprint

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is wrapped by every error Parse and Validate return, so callers
// can tell a bad document from a failure to read one.
var ErrInvalid = errors.New("invalid blueprint")

// FieldError is one problem in a blueprint, located by its field path and,
// for YAML input, its line.
type FieldError struct {
	Path string // e.g. spec.files[0].mode
	Line int    // 0 when unknown
	Msg  string // says what is wrong, quoting the bad value
}

func (e FieldError) Error() string {
	s := e.Msg
	if e.Path != "" {
		s = e.Path + ": " + s
	}
	if e.Line > 0 {
		s += fmt.Sprintf(" (line %d)", e.Line)
	}
	return s
}

// Errors is every problem found in one document; validation reports them
// together rather than stopping at the first.
type Errors []FieldError

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Is makes errors.Is(err, ErrInvalid) true for any Errors.
func (es Errors) Is(target error) bool { return target == ErrInvalid }

// Strings lists the problems one per element, for status reports.
func (es Errors) Strings() []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Error()
	}
	return out
}
