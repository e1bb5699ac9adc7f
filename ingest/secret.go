package ingest

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
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

// SecretRef is a credential a config file gives in one of three ways,
// under three keys: the value itself (<name>), a file holding it
// (<name>_file, trimmed), or an environment variable (<name>_env). The
// sinks keep the three fields flat in their config and check and load
// them through a SecretRef.
type SecretRef struct {
	Value     Secret
	File, Env string
}

// Given reports whether any of the three ways is used.
func (r SecretRef) Given() bool { return r.given() > 0 }

func (r SecretRef) given() int {
	n := 0
	for _, set := range []bool{r.Value.IsSet(), r.File != "", r.Env != ""} {
		if set {
			n++
		}
	}
	return n
}

// Check validates the reference without reading the secret: at most one
// way, and one when required. prefix names the enclosing key ("sinks[2]"),
// name the value's key ("routing_key").
func (r SecretRef) Check(prefix, name string, required bool) error {
	switch n := r.given(); {
	case n == 0 && required:
		return fmt.Errorf("%s.%s: required (or %s_file, or %s_env)", prefix, name, name, name)
	case n > 1:
		return fmt.Errorf("%s.%s: give only one of %s, %s_file and %s_env", prefix, name, name, name, name)
	}
	return nil
}

// Resolve loads the credential. key names the value's config key
// ("sinks[2].routing_key"); the file and env keys are key+"_file" and
// key+"_env". Errors name the keys, never the value.
func (r SecretRef) Resolve(key string) (Secret, error) {
	switch {
	case r.given() > 1:
		return "", fmt.Errorf("%s: give only one of %s, %s_file and %s_env", key, key, key, key)
	case r.Value.IsSet():
		return r.Value, nil
	case r.File != "":
		b, err := os.ReadFile(r.File)
		if err != nil {
			return "", fmt.Errorf("%s_file: %w", key, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%s_file: %s is empty", key, r.File)
		}
		return Secret(v), nil
	case r.Env != "":
		v := strings.TrimSpace(os.Getenv(r.Env))
		if v == "" {
			return "", fmt.Errorf("%s_env: environment variable %s is not set or empty", key, r.Env)
		}
		return Secret(v), nil
	}
	return "", fmt.Errorf("%s: required (or %s_file, or %s_env)", key, key, key)
}
