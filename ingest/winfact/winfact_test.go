package winfact

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// Windows values as the registry holds them (regedit / reg query output of
// real installations).
const (
	server2019 = `%SystemRoot%\system32\csrss.exe ObjectDirectory=\Windows SharedSection=1024,20480,768 Windows=On SubSystemType=Windows ServerDll=basesrv,1 ServerDll=winsrv:UserServerDllInitialization,3 ServerDll=sxssrv,4 ProfileControl=Off MaxRequestThreads=16`
	fixed4096  = `%SystemRoot%\system32\csrss.exe ObjectDirectory=\Windows SharedSection=1024,20480,4096 Windows=On SubSystemType=Windows ServerDll=basesrv,1 ServerDll=winsrv:UserServerDllInitialization,3 ServerDll=sxssrv,4 ProfileControl=Off MaxRequestThreads=16`
	xp         = `%SystemRoot%\system32\csrss.exe ObjectDirectory=\Windows SharedSection=1024,3072,512 Windows=On SubSystemType=Windows ServerDll=basesrv,1 ServerDll=winsrv:UserServerDllInitialization,3 ServerDll=winsrv:ConServerDllInitialization,2 ProfileControl=Off MaxRequestThreads=16`
	// The PowerShell example of seed 000 (its "Windows On" lacks the "=").
	seedScript = `%SystemRoot%\system32\csrss.exe ObjectDirectory=\Windows SharedSection=1024,20480,4096 Windows On SubSystemType=Windows ServerDll=basesrv,1 ServerDll=winsrv:UserServerDllInitialization,3 ServerDll=sxssrv,4 ProfileControl=Off MaxRequestThreads=16`
)

func TestParseWindowsValue(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     SharedSection
		err      bool
	}{
		{"server 2019 default", server2019, SharedSection{1024, 20480, 768, true}, false},
		{"raised to 4096", fixed4096, SharedSection{1024, 20480, 4096, true}, false},
		{"xp", xp, SharedSection{1024, 3072, 512, true}, false},
		{"seed 000 script", seedScript, SharedSection{1024, 20480, 4096, true}, false},
		{"two numbers: the interactive size", `csrss.exe ObjectDirectory=\Windows SharedSection=1024,3072 Windows=On`, SharedSection{1024, 3072, 3072, false}, false},
		{"case and spaces", `csrss.exe sharedsection = 1024, 20480 ,2048 Windows=On`, SharedSection{1024, 20480, 2048, true}, false},
		{"last in the line", `csrss.exe SharedSection=1024,20480,1536`, SharedSection{1024, 20480, 1536, true}, false},
		{"not a word start", `csrss.exe NoSharedSection=1,2,3`, SharedSection{}, true},
		{"absent", `%SystemRoot%\system32\csrss.exe ObjectDirectory=\Windows Windows=On`, SharedSection{}, true},
		{"one number", `csrss.exe SharedSection=1024 Windows=On`, SharedSection{}, true},
		{"four numbers", `csrss.exe SharedSection=1024,20480,768,5 Windows=On`, SharedSection{}, true},
		{"not a number", `csrss.exe SharedSection=1024,20480,lots Windows=On`, SharedSection{}, true},
		{"negative", `csrss.exe SharedSection=1024,20480,-768`, SharedSection{}, true},
		{"empty", ``, SharedSection{}, true},
	} {
		got, err := ParseWindowsValue(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("%s: got %+v, %v; want %+v, error %v", c.name, got, err, c.want, c.err)
		}
	}
	if !errors.Is(func() error { _, err := ParseWindowsValue("csrss.exe"); return err }(), ErrNoSharedSection) {
		t.Error("absent SharedSection is not ErrNoSharedSection")
	}
	if s := (SharedSection{1024, 20480, 768, true}).String(); s != "1024,20480,768" {
		t.Errorf("String = %q", s)
	}
}

// fakeKey is a recorded SubSystems key that a test changes.
type fakeKey struct {
	mu  sync.Mutex
	r   Reading
	err error
}

func (g *fakeKey) Read() (Reading, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.r, g.err
}

func (g *fakeKey) set(f func(*Reading)) {
	g.mu.Lock()
	f(&g.r)
	g.mu.Unlock()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestFactLifecycle follows a node through seed 000's fix: the default
// heap is published at start, nothing while it stays, the raised value is
// published as pending until the reboot, and the reboot puts it in effect.
// A restart of the sidecar within one boot keeps the size in effect
// (checkpoint), without which it could not tell.
func TestFactLifecycle(t *testing.T) {
	boot := time.Date(2026, 3, 1, 6, 0, 0, 0, time.UTC)
	reg := &fakeKey{r: Reading{Value: server2019, Modified: boot.Add(-30 * 24 * time.Hour), Boot: boot}}
	cps, err := ingest.OpenCheckpoints(filepath.Join(t.TempDir(), "checkpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	now := boot.Add(time.Hour)
	newSource := func() *Source {
		s, err := New(Config{Node: "win-client-7", Reader: reg, Checkpoints: cps, Now: func() time.Time { return now }}, quiet())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := newSource()

	ev, ok := s.poll(true)
	if !ok {
		t.Fatal("nothing published at start")
	}
	want := map[string]any{"heap_kb": 768, "configured_kb": 768, "interactive_kb": 20480, "shared_kb": 1024,
		"shared_section": "1024,20480,768", "pending_reboot": false, "boot_time": "2026-03-01T06:00:00Z", "kernel": "windows"}
	checkFields(t, "start", ev, want)
	if ev.Source != EventSource || ev.Kind != KindDesktopHeap || ev.Node != "win-client-7" || !ev.Time.Equal(now) || ev.Level != ingest.LevelInfo {
		t.Errorf("start: event %+v", ev)
	}
	first := ev.ID
	ev.Commit()

	if _, ok := s.poll(false); ok {
		t.Error("published again without a change")
	}

	// The operator raises the value (seed 000 step 2): pending until the reboot.
	reg.set(func(r *Reading) { r.Value, r.Modified = fixed4096, boot.Add(2*time.Hour) })
	ev, ok = s.poll(false)
	if !ok {
		t.Fatal("the raised value was not published")
	}
	want["configured_kb"], want["shared_section"], want["pending_reboot"] = 4096, "1024,20480,4096", true
	checkFields(t, "raised", ev, want)
	if ev.Level != ingest.LevelWarn {
		t.Errorf("raised: level %s", ev.Level)
	}
	ev.Commit()

	// The sidecar restarts before the reboot: the heap in effect is still
	// 768 (the key was written after the boot; the checkpoint knows).
	s = newSource()
	ev, ok = s.poll(true)
	if !ok {
		t.Fatal("nothing published at restart")
	}
	checkFields(t, "restart before reboot", ev, want)

	// Without the checkpoint it could not tell: heap_kb is left out.
	s2, err := New(Config{Node: "win-client-7", Reader: reg, Now: func() time.Time { return now }}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ev2, _ := s2.poll(true)
	if _, has := ev2.Fields["heap_kb"]; has || ev2.Fields["pending_reboot"] != true {
		t.Errorf("no checkpoint, key written after boot: fields %v", ev2.Fields)
	}

	// The reboot (seed 000 step 3).
	reg.set(func(r *Reading) { r.Boot = boot.Add(3 * time.Hour) })
	ev, ok = s.poll(false)
	if !ok {
		t.Fatal("the reboot was not published")
	}
	want["heap_kb"], want["pending_reboot"], want["boot_time"] = 4096, false, "2026-03-01T09:00:00Z"
	checkFields(t, "after reboot", ev, want)
	if ev.ID == first {
		t.Error("same id after the reboot")
	}

	// Boot times computed a second apart are one boot.
	reg.set(func(r *Reading) { r.Boot = r.Boot.Add(time.Second) })
	if _, ok := s.poll(false); ok {
		t.Error("a boot time a second off was taken for a reboot")
	}
}

func checkFields(t *testing.T, what string, ev ingest.Event, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if ev.Fields[k] != v {
			t.Errorf("%s: fields.%s = %v (%T), want %v", what, k, ev.Fields[k], ev.Fields[k], v)
		}
	}
	if _, has := ev.Fields["heap_kb"]; has && want["heap_kb"] == nil {
		t.Errorf("%s: heap_kb %v, want none", what, ev.Fields["heap_kb"])
	}
	if ev.Msg == "" {
		t.Errorf("%s: no message", what)
	}
}

// TestRunRetriesUnreadableKey: a failing read publishes nothing and is
// retried; the first good read publishes.
func TestRunRetriesUnreadableKey(t *testing.T) {
	boot := time.Date(2026, 3, 1, 6, 0, 0, 0, time.UTC)
	reg := &fakeKey{err: errors.New("Access is denied.")}
	s, err := New(Config{Node: "win-1", Reader: reg, Interval: 10 * time.Millisecond}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan ingest.Event, 4)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, out) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, f := s.Stats(); f >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no retries")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case ev := <-out:
		t.Fatalf("published %v while the key is unreadable", ev)
	default:
	}
	reg.mu.Lock()
	reg.err, reg.r = nil, Reading{Value: server2019, Boot: boot}
	reg.mu.Unlock()
	select {
	case ev := <-out:
		if ev.Fields["heap_kb"] != 768 {
			t.Errorf("fields %v", ev.Fields)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing published once readable")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNewWithoutRegistry(t *testing.T) {
	if _, err := New(Config{Node: "n"}, quiet()); err == nil && !isWindows() {
		t.Error("New without a Reader succeeded off Windows")
	}
	if _, err := New(Config{Reader: &fakeKey{}}, quiet()); err == nil {
		t.Error("New without a node succeeded")
	}
}

func isWindows() bool { _, err := NewRegistryReader(); return err == nil }
