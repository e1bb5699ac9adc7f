//go:build windows

package winfact

import (
	"testing"
	"time"

	"golang.org/x/sys/windows/registry"

	"github.com/klaxon-dev/klaxon/internal/winetest"
)

// TestRegistryReaderLive reads this machine's SubSystems key and parses it.
func TestRegistryReaderLive(t *testing.T) {
	r, err := NewRegistryReader()
	if err != nil {
		t.Fatal(err)
	}
	rd, err := r.Read()
	if err != nil {
		winetest.Skip(t, "no SubSystems key: "+err.Error())
		t.Fatal(err)
	}
	ss, err := ParseWindowsValue(rd.Value)
	if err != nil {
		winetest.Skip(t, "Wine's SubSystems value has no SharedSection: "+rd.Value)
		t.Fatalf("%q: %v", rd.Value, err)
	}
	t.Logf("SharedSection=%s (non-interactive %d KB), key written %s, boot %s", ss, ss.NonInteractiveKB, rd.Modified, rd.Boot)
	if rd.Boot.IsZero() || ss.NonInteractiveKB <= 0 {
		t.Errorf("reading %+v, %+v", rd, ss)
	}
}

// TestPoolSamplerLive samples this machine's kernel pools and processes.
func TestPoolSamplerLive(t *testing.T) {
	s, err := NewPoolSampler()
	if err != nil {
		t.Fatal(err)
	}
	ps, err := s.SamplePool()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("paged %s, non-paged %s, physical %s, %d handles, %d processes sampled", MB(ps.PagedBytes), MB(ps.NonpagedBytes), MB(ps.PhysicalBytes), ps.Handles, len(ps.Procs))
	if ps.PhysicalBytes == 0 || len(ps.Procs) == 0 {
		t.Errorf("sample %+v", ps)
	}
	if ps.NonpagedBytes == 0 {
		winetest.Skip(t, "Wine reports no kernel pools")
		t.Errorf("no non-paged pool: %+v", ps)
	}
	ev := PoolEvent("this", ps, 3)
	if ev.Fields["top_process"] == nil {
		t.Errorf("no top process: %v", ev.Fields)
	}
}

// TestRegistryReaderKey reads a SubSystems key written as Windows writes
// it (REG_EXPAND_SZ), under HKCU so that the test needs no rights: the
// value, its write time (after the boot) and the boot time.
func TestRegistryReaderKey(t *testing.T) {
	path := `Software\klaxon-test\` + t.Name() + `\SubSystems`
	k, _, err := registry.CreateKey(registry.CURRENT_USER, path, registry.ALL_ACCESS)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		k.Close()
		_ = registry.DeleteKey(registry.CURRENT_USER, path)
	}()
	if err := k.SetExpandStringValue("Windows", server2019); err != nil {
		t.Fatal(err)
	}
	r := registryReader{root: registry.CURRENT_USER, name: "HKCU", path: path}
	rd, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	if rd.Value != server2019 || rd.Boot.IsZero() || rd.Boot.After(time.Now()) {
		t.Errorf("reading %+v", rd)
	}
	if !rd.Modified.IsZero() && rd.Modified.Before(rd.Boot) {
		t.Errorf("key written %s, before the boot %s", rd.Modified, rd.Boot)
	}
	// Written after the boot: a fresh source cannot tell the size in effect.
	s, err := New(Config{Node: "w", Reader: r}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ev, ok := s.poll(true)
	if !ok || ev.Fields["configured_kb"] != 768 {
		t.Errorf("fact %+v", ev)
	}
	if _, has := ev.Fields["heap_kb"]; has && !rd.Modified.IsZero() {
		t.Errorf("heap_kb known for a key written after the boot: %v", ev.Fields)
	}
	if _, err := (registryReader{root: registry.CURRENT_USER, name: "HKCU", path: path + `\nope`}).Read(); err == nil {
		t.Error("a missing key read")
	}
}
