package winevt

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klaxon-dev/klaxon/ingest"
)

// sharedDir is the shared reference material, relative to the package.
const sharedDir = "../../../shared/testdata/evtx"

func sharedFile(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(sharedDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared sample %s not available: %v", name, err)
	}
	return p
}

func readAll(t testing.TB, path string) ([]ingest.Event, Stats) {
	t.Helper()
	var evs []ingest.Event
	st, err := ReadEVTXFile(context.Background(), path, DecoderConfig{}, func(e ingest.Event) { evs = append(evs, e) })
	if err != nil {
		t.Fatalf("ReadEVTX(%s): %v", path, err)
	}
	return evs, st
}

// agreed are the files where SOURCES.md's two reference parsers (python-evtx
// and libevtx's evtxexport) agree on the record count.
var agreed = []struct {
	name  string
	count int
}{
	{"omerbenamram-evtx_system.evtx", 1881},
	{"2-vss_7-System.evtx", 1160},
	{"sample-with-zero-data-size-event.evtx", 335},
	{"python-evtx_system.evtx", 1601},
	{"plaso_System.evtx", 5009},
	{"System2.evtx", 194},
	{"RDPAuth_System.evtx", 186},
	{"ID7000,7009,7045-Payload deployed via service - Tchopper.evtx", 733},
	{"ID7009-Service deployment time out (meterpreter).evtx", 3},
	{"ID7045-7036 PSexec service installation.evtx", 4},
	{"DE_WinEventLogSvc_Crash_System_7036.evtx", 6},
	{"metasploit-psexec-native-target-system.evtx", 7},
	{"metasploit-psexec-powershell-target-system.evtx", 5},
	{"disablestop-eventlog.evtx", 13},
	{"many-events-application.evtx", 2216},
	{"Application_no_crc32.evtx", 17},
	{"security_bad_string_cache.evtx", 2261},
	{"sample-with-irregular-bool-values.evtx", 3028},
	{"post-Security.evtx", 126},
	{"issue_38.evtx", 1},
	{"issue_39.evtx", 394},
	{"Security_1_record.evtx", 1},
	{"security_sample.evtx", 10},
}

func TestReadEVTXAgreedCounts(t *testing.T) {
	for _, tc := range agreed {
		t.Run(tc.name, func(t *testing.T) {
			evs, st := readAll(t, sharedFile(t, tc.name))
			if len(evs) != tc.count || st.Records != int64(tc.count) {
				t.Errorf("records: got %d (stats %d), want %d; errors: %q", len(evs), st.Records, tc.count, st.Errors)
			}
			seen := map[string]bool{}
			for _, e := range evs {
				if seen[e.ID] {
					t.Errorf("duplicate id %s", e.ID)
				}
				seen[e.ID] = true
				if e.Source != ingest.SourceWinEvt && e.Source != ingest.SourceNomadLog {
					t.Errorf("source %q", e.Source)
				}
			}
			t.Logf("%d records, %d chunks, stats %+v", len(evs), st.Chunks, st)
		})
	}
}

func TestDisagreedPrint(t *testing.T) {
	for _, name := range []string{"sample_with_a_bad_chunk_magic.evtx", "2-vss_0-Microsoft-Windows-RemoteDesktopServices-RdpCoreTS%4Operational.evtx",
		"2-vss_0-Microsoft-Windows-TerminalServices-RemoteConnectionManager%4Operational.evtx", "Microsoft-Windows-HelloForBusiness%4Operational.evtx",
		"Microsoft-Windows-LanguagePackSetup%4Operational.evtx", "issue_201.evtx", "dns_log_malformed.evtx", "issue_43.evtx"} {
		evs, st := readAll(t, sharedFile(t, name))
		t.Logf("%s: %d records; stats %d chunks %d bad chunks %d bad records %d crc\n  %s", name, len(evs), st.Chunks, st.BadChunks, st.BadRecords, st.ChecksumErrors, strings.Join(st.Errors, "\n  "))
	}
}
