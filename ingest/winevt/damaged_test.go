package winevt

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klaxon-dev/klaxon/ingest"
)

// TestReadEVTXDamaged: on the damaged samples (and where the reference
// parsers disagree) ReadEVTX does not crash, delivers every readable record
// and names the place of the rest.
func TestReadEVTXDamaged(t *testing.T) {
	cases := []struct {
		name                  string
		records               int
		badChunks, badRecords int64
		places                []string
	}{
		// python-evtx 270, evtxexport 267 (+81 recovered), Rust 270/2.
		{"sample_with_a_bad_chunk_magic.evtx", 270, 2, 3, []string{
			"chunk 6 (offset 0x61000): no chunk signature, but the slot holds data",
			"chunk 10 (offset 0xa1000): no chunk signature, but the slot holds data",
			"chunk 0 (offset 0x1000): offset 0x2198: bad record signature",
			"chunk 7 (offset 0x71000): offset 0x2060: bad record signature",
			"chunk 9 (offset 0x91000): offset 0xe038: bad record signature",
		}},
		// both 1910; Rust 1910/4.
		{"2-vss_0-Microsoft-Windows-RemoteDesktopServices-RdpCoreTS%4Operational.evtx", 1910, 0, 4, []string{
			"chunk 0 (offset 0x1000): record 6335011 (offset 0xbfd0): template instance at 0xbfec: value 2 overruns the record",
			"chunk 0 (offset 0x1000): offset 0xc1b0: bad record signature",
			"chunk 13 (offset 0xd1000): record 6914519 (offset 0xbf98)",
			"chunk 13 (offset 0xd1000): offset 0xc170: bad record signature",
		}},
		// both 1774; Rust 1774/2.
		{"2-vss_0-Microsoft-Windows-TerminalServices-RemoteConnectionManager%4Operational.evtx", 1774, 0, 2, []string{
			"chunk 1 (offset 0x11000): record 463011 (offset 0x7e98)",
			"chunk 1 (offset 0x11000): offset 0x8088: bad record signature",
		}},
		// python-evtx 6, evtxexport 5, Rust 6.
		{"Microsoft-Windows-HelloForBusiness%4Operational.evtx", 6, 0, 1, []string{
			"chunk 0 (offset 0x1000): offset 0x1110: bad record signature",
		}},
		// python-evtx 16 + 1 error, evtxexport 16, Rust 17: record 17 has an incomplete template.
		{"Microsoft-Windows-LanguagePackSetup%4Operational.evtx", 16, 0, 2, []string{
			"chunk 0 (offset 0x1000): record 17 (offset 0x1ef8)",
		}},
		// python-evtx fails, evtxexport exits 1, Rust parses it.
		{"issue_201.evtx", 1, 0, 0, nil},
		// evtxexport 5, python-evtx 1.
		{"dns_log_malformed.evtx", 5, 0, 0, nil},
		// evtxexport 1730, python-evtx 1729.
		{"issue_43.evtx", 1730, 0, 0, nil},
		// Agreed counts, with the damage reported.
		{"System2.evtx", 194, 1, 0, []string{"chunk 2 (offset 0x21000): cut off at the end of the file (64832 of 65536 bytes)"}},
		{"sample-with-zero-data-size-event.evtx", 335, 0, 1, []string{"bad record size 0"}},
		{"Application_no_crc32.evtx", 17, 0, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evs, st := readAll(t, sharedFile(t, tc.name))
			if len(evs) != tc.records || st.BadChunks != tc.badChunks || st.BadRecords != tc.badRecords {
				t.Errorf("%d records, %d bad chunks, %d bad records; want %d, %d, %d\n%s", len(evs), st.BadChunks, st.BadRecords,
					tc.records, tc.badChunks, tc.badRecords, strings.Join(st.Errors, "\n"))
			}
			for _, p := range tc.places {
				found := false
				for _, e := range st.Errors {
					if strings.HasPrefix(e, tc.name+": ") && strings.Contains(e, p) {
						found = true
					}
				}
				if !found {
					t.Errorf("no error at %q in\n%s", p, strings.Join(st.Errors, "\n"))
				}
			}
		})
	}
}

func TestReadEVTXNotEVTX(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.evtx")
	if err := os.WriteFile(p, []byte("2024-01-01T00:00:00Z [INFO] agent: hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadEVTXFile(context.Background(), p, DecoderConfig{}, func(ingest.Event) {}); err == nil || !strings.Contains(err.Error(), "not an EVTX file") {
		t.Errorf("err %v", err)
	}
	if _, err := ReadEVTXFile(context.Background(), filepath.Join(t.TempDir(), "absent.evtx"), DecoderConfig{}, func(ingest.Event) {}); err == nil {
		t.Error("no error for a missing file")
	}
}

// TestReadEVTXGarbageChunks: random bytes in chunk slots never crash the reader.
func TestReadEVTXGarbageChunks(t *testing.T) {
	path := seedFile(t)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		c := append([]byte(nil), b...)
		// Flip bytes in the records area, deterministic per round.
		for j := 0; j < 8; j++ {
			k := fileHeaderSize + chunkHeaderSize + (i*7919+j*104729)%(len(c)-fileHeaderSize-chunkHeaderSize)
			c[k] ^= byte(0x5a + i + j)
		}
		p := filepath.Join(t.TempDir(), "g.evtx")
		if err := os.WriteFile(p, c, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadEVTXFile(context.Background(), p, DecoderConfig{}, func(ingest.Event) {}); err != nil {
			t.Fatal(err)
		}
	}
}
