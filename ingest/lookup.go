package ingest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Lookup returns the value at a path of the event as a string: one of the
// top-level names (id, node, node_id, source, kind, level, msg) or
// "fields.<name>". ok is false when the path names nothing or the field is
// absent.
func (e *Event) Lookup(path string) (string, bool) {
	switch path {
	case "id":
		return e.ID, true
	case "node":
		return e.Node, true
	case "node_id":
		return e.NodeID, e.NodeID != ""
	case "source":
		return e.Source, true
	case "kind":
		return e.Kind, true
	case "level":
		return e.Level, true
	case "msg":
		return e.Msg, true
	}
	if name, ok := strings.CutPrefix(path, "fields."); ok {
		v, ok := e.Fields[name]
		if !ok {
			return "", false
		}
		if s, ok := v.(string); ok {
			return s, true
		}
		return stringify(v), true
	}
	return "", false
}

// LookupFirst takes a path with alternatives separated by "|"
// ("fields.prev_node|node") and returns the first that is present and not
// empty.
func (e *Event) LookupFirst(paths string) (string, bool) {
	for {
		p, rest, more := strings.Cut(paths, "|")
		if v, ok := e.Lookup(p); ok && v != "" {
			return v, true
		}
		if !more {
			return "", false
		}
		paths = rest
	}
}

// ValidPaths reports whether every "|"-separated alternative of paths is a
// name Lookup understands.
func ValidPaths(paths string) bool {
	for _, p := range strings.Split(paths, "|") {
		if !ValidPath(p) {
			return false
		}
	}
	return true
}

// ValidPath reports whether path is a name Lookup understands.
func ValidPath(path string) bool {
	switch path {
	case "id", "node", "node_id", "source", "kind", "level", "msg":
		return true
	}
	name, ok := strings.CutPrefix(path, "fields.")
	return ok && name != ""
}

func stringify(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case fmt.Stringer:
		return x.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
