package ingest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecretRef(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	if err := os.WriteFile(file, []byte(" from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KLAXON_TEST_SECRET", "from-env")
	tests := []struct {
		name      string
		ref       SecretRef
		required  bool
		checkErr  string
		want      Secret
		resolveEr string
	}{
		{"value", SecretRef{Value: "v"}, true, "", "v", ""},
		{"file trimmed", SecretRef{File: file}, true, "", "from-file", ""},
		{"env", SecretRef{Env: "KLAXON_TEST_SECRET"}, true, "", "from-env", ""},
		{"none, required", SecretRef{}, true, "sinks[1].routing_key: required (or routing_key_file, or routing_key_env)", "", "sinks[1].routing_key: required"},
		{"none, optional", SecretRef{}, false, "", "", "sinks[1].routing_key: required"},
		{"two ways", SecretRef{Value: "v", Env: "X"}, false, "sinks[1].routing_key: give only one of routing_key, routing_key_file and routing_key_env", "", "give only one of"},
		{"empty file", SecretRef{File: empty}, true, "", "", "sinks[1].routing_key_file: " + empty + " is empty"},
		{"unset env", SecretRef{Env: "KLAXON_TEST_UNSET"}, true, "", "", "sinks[1].routing_key_env: environment variable KLAXON_TEST_UNSET is not set or empty"},
	}
	for _, tc := range tests {
		err := tc.ref.Check("sinks[1]", "routing_key", tc.required)
		if (err == nil) != (tc.checkErr == "") || (err != nil && err.Error() != tc.checkErr) {
			t.Errorf("%s: Check = %v, want %q", tc.name, err, tc.checkErr)
		}
		got, err := tc.ref.Resolve("sinks[1].routing_key")
		if (err == nil) != (tc.resolveEr == "") || (err != nil && !strings.Contains(err.Error(), tc.resolveEr)) || got != tc.want {
			t.Errorf("%s: Resolve = %q, %v, want %q, %q", tc.name, got.Reveal(), err, tc.want.Reveal(), tc.resolveEr)
		}
		if err != nil && strings.Contains(err.Error(), "from-") {
			t.Errorf("%s: the error names the value: %v", tc.name, err)
		}
		if tc.ref.Given() != (tc.ref != SecretRef{}) {
			t.Errorf("%s: Given = %v", tc.name, tc.ref.Given())
		}
	}
}
