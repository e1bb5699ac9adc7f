// Package journaltest builds real journal files for tests: agent log lines
// become journal export entries as journald stores a unit's stdout, and
// systemd-journal-remote writes them into a journal file that journalctl
// reads.
package journaltest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest/nomadlog"
)

// Require skips the test with msg, or fails it when KLAXON_REQUIRE_EXTERNAL=1.
func Require(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("KLAXON_REQUIRE_EXTERNAL") == "1" {
		t.Fatal(msg + "; KLAXON_REQUIRE_EXTERNAL=1 requires it")
	}
	t.Skip(msg)
}

// Tools returns the paths of journalctl and systemd-journal-remote
// (Debian: systemd and systemd-journal-remote); the test is skipped when
// one is missing, and on Windows, which has no journal.
func Tools(t testing.TB) (journalctl, remote string) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("the systemd journal is not available on Windows (journalctl, systemd-journal-remote)")
	}
	j, err := exec.LookPath("journalctl")
	if err != nil {
		Require(t, "journalctl not found")
	}
	for _, p := range []string{"/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"} {
		if _, err := os.Stat(p); err == nil {
			return j, p
		}
	}
	if p, err := exec.LookPath("systemd-journal-remote"); err == nil {
		return j, p
	}
	Require(t, "systemd-journal-remote not found (Debian package systemd-journal-remote)")
	return "", ""
}

// Shared returns root/rel, skipping the test when it is absent (the team's
// shared test data).
func Shared(t testing.TB, root, rel string) string {
	t.Helper()
	p := filepath.Join(root, rel)
	if _, err := os.Stat(p); err != nil {
		Require(t, "shared test data absent: "+err.Error())
	}
	return p
}

// Lines reads the lines of a text file.
func Lines(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	return strings.Split(s, "\n")
}

// Unit describes the process whose stdout the entries come from.
type Unit struct {
	Hostname string // _HOSTNAME
	Unit     string // _SYSTEMD_UNIT (default nomad.service)
	PID      int    // _PID (default 4242)
	BootID   string // _BOOT_ID (32 hex digits; default a fixed one)
	// Prefix goes before every line that is a record (the agent's console
	// writer puts four spaces before each record under systemd, not before
	// the other lines of a multi-line record).
	Prefix string
	// Start is the time of lines before the first with a timestamp
	// (default 2026-11-22T00:00:00Z).
	Start time.Time
	// Extra fields added to every entry.
	Extra map[string]string
}

// Export returns the journal export entries journald makes of lines
// written to the unit's stdout: one entry per line, __REALTIME_TIMESTAMP
// from the line's own timestamp (else the last one), __MONOTONIC_TIMESTAMP
// rising.
func Export(lines []string, u Unit) []byte {
	if u.Unit == "" {
		u.Unit = "nomad.service"
	}
	if u.PID == 0 {
		u.PID = 4242
	}
	if u.BootID == "" {
		u.BootID = "6b1a2c3d4e5f60718293a4b5c6d7e8f9"
	}
	t := u.Start
	if t.IsZero() {
		t = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	}
	base := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC) // "boot" at midnight
	var b bytes.Buffer
	mono := int64(0)
	for _, line := range lines {
		msg := line
		if l, err := nomadlog.ParseLine([]byte(line)); err == nil {
			if !l.Time.IsZero() && !l.NoYear {
				t = l.Time
			}
			if l.Format != nomadlog.FormatPanic {
				msg = u.Prefix + line
			}
		}
		mono = max(mono+1, t.Sub(base).Microseconds())
		f := [][2]string{
			{"__REALTIME_TIMESTAMP", strconv.FormatInt(t.UnixMicro(), 10)},
			{"__MONOTONIC_TIMESTAMP", strconv.FormatInt(mono, 10)},
			{"_BOOT_ID", u.BootID},
			{"_TRANSPORT", "stdout"},
			{"PRIORITY", "6"},
			{"SYSLOG_FACILITY", "3"},
			{"SYSLOG_IDENTIFIER", "nomad"},
			{"_PID", strconv.Itoa(u.PID)},
			{"_UID", "0"},
			{"_GID", "0"},
			{"_COMM", "nomad"},
			{"_EXE", "/usr/bin/nomad"},
			{"_CMDLINE", "/usr/bin/nomad agent -config /etc/nomad.d"},
			{"_SYSTEMD_CGROUP", "/system.slice/" + u.Unit},
			{"_SYSTEMD_UNIT", u.Unit},
			{"_SYSTEMD_SLICE", "system.slice"},
			{"_HOSTNAME", u.Hostname},
			{"MESSAGE", msg},
		}
		for k, v := range u.Extra {
			f = append(f, [2]string{k, v})
		}
		WriteEntry(&b, f)
	}
	return b.Bytes()
}

// WriteEntry writes one export-format entry; values with a newline or a
// control character are written in the binary form.
func WriteEntry(b *bytes.Buffer, fields [][2]string) {
	for _, kv := range fields {
		k, v := kv[0], kv[1]
		if strings.ContainsFunc(v, func(r rune) bool { return r < ' ' && r != '\t' }) {
			b.WriteString(k + "\n")
			_ = binary.Write(b, binary.LittleEndian, uint64(len(v)))
			b.WriteString(v + "\n")
			continue
		}
		b.WriteString(k + "=" + v + "\n")
	}
	b.WriteString("\n")
}

// Write appends export entries to the journal file path (created when
// absent) with systemd-journal-remote.
func Write(t testing.TB, remote, path string, export []byte) {
	t.Helper()
	cmd := exec.Command(remote, "--output="+path, "-")
	cmd.Stdin = bytes.NewReader(export)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("systemd-journal-remote: %v: %s", err, out.String())
	}
}

// Cursors lists the cursors of a journal file's entries, in order.
func Cursors(t testing.TB, journalctl, path string) []string {
	t.Helper()
	out, err := exec.Command(journalctl, "--file="+path, "--no-pager", "--output=json", "--output-fields=__CURSOR").Output()
	if err != nil {
		t.Fatalf("journalctl: %v", err)
	}
	var cs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, `"__CURSOR":"`)
		if i < 0 {
			t.Fatalf("journalctl line without a cursor: %s", line)
		}
		rest := line[i+len(`"__CURSOR":"`):]
		cs = append(cs, rest[:strings.IndexByte(rest, '"')])
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cs
}

// JSON returns journalctl -o json of a journal file.
func JSON(t testing.TB, journalctl, path string) []byte {
	t.Helper()
	out, err := exec.Command(journalctl, "--file="+path, "--no-pager", "--output=json", "--all").Output()
	if err != nil {
		t.Fatalf("journalctl: %v", err)
	}
	return out
}

// String describes u for messages.
func (u Unit) String() string { return fmt.Sprintf("%s/%s[%d]", u.Hostname, u.Unit, u.PID) }
