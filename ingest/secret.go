package ingest

import (
	"encoding/json"
	"log/slog"
)

// Secret holds a credential (token, password, routing key). It prints, logs
// and marshals as "<secret>" so that it never leaks into logs or errors;
// Reveal returns the value for the one place that sends it.
type Secret string

const redacted = "<secret>"

// Reveal returns the credential itself.
func (s Secret) Reveal() string { return string(s) }

// IsSet reports whether a value is present.
func (s Secret) IsSet() bool { return s != "" }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return s.String() }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON never writes the value.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalYAML never writes the value (gopkg.in/yaml.v3 marshaler), so
// `klaxon config show` prints "<secret>".
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// UnmarshalJSON reads a plain string.
func (s *Secret) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Secret(v)
	return nil
}

// UnmarshalYAML reads a plain string (gopkg.in/yaml.v3 unmarshaler).
func (s *Secret) UnmarshalYAML(unmarshal func(any) error) error {
	var v string
	if err := unmarshal(&v); err != nil {
		return err
	}
	*s = Secret(v)
	return nil
}
