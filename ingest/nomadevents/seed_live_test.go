//go:build linux

package nomadevents

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/nomadtest"
)

// TestSeedAgainstNomad runs the source against the real Nomad 2.0.5: a dev
// agent runs 3 raw_exec allocations before the source starts. The first
// count event says 3 (seeded from the API; the stream's replay of the
// agent's buffer would have counted 1, 2, 3), the replay of the frames
// that placed and started them counts nothing more, and stopping the job
// brings the count to 0 (a count incremented twice would stay above).
// The agent runs Linux: the decoder counts Linux nodes here.
func TestSeedAgainstNomad(t *testing.T) {
	bin := nomadtest.Binary(t)
	a := nomadtest.Start(t, bin, "win-seed", "", "", nomadtest.RawExec)
	nomadtest.Poll(t, 60*time.Second, "the dev agent's API", func() bool {
		_, err := a.API().Agent().Self()
		return err == nil
	})
	c := a.API()
	nodes := nomadtest.WaitReady(t, c, a)
	nodeID := nodes["win-seed"].ID

	const n = 3
	job := api.NewServiceJob("sleepers", "sleepers", "global", 50)
	job.Datacenters = []string{"*"}
	task := api.NewTask("t", "raw_exec").
		SetConfig("command", "/bin/sh").
		SetConfig("args", []string{"-c", "sleep 600"}).
		Require(&api.Resources{CPU: ptr(20), MemoryMB: ptr(16)})
	job.AddTaskGroup(api.NewTaskGroup("g", n).AddTask(task))
	if _, _, err := c.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	running := func() int {
		list, _, err := c.Allocations().List(&api.QueryOptions{Params: map[string]string{"task_states": "false"}})
		if err != nil {
			return -1
		}
		k := 0
		for _, al := range list {
			if al.ClientStatus == "running" && al.NodeID == nodeID {
				k++
			}
		}
		return k
	}
	nomadtest.Poll(t, 90*time.Second, "3 allocations running", func() bool { return running() == n })
	t.Cleanup(func() { _, _, _ = c.Jobs().Deregister("sleepers", true, nil) })

	src, err := New(Config{Address: a.Addr(), MinBackoff: 50 * time.Millisecond}, discard)
	if err != nil {
		t.Fatal(err)
	}
	src.dec.kernel = "linux"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan ingest.Event, 64)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	defer func() { cancel(); <-done }()

	next := func(what string, d time.Duration) (ingest.Event, bool) {
		t.Helper()
		timer := time.NewTimer(d)
		defer timer.Stop()
		for {
			select {
			case ev := <-out:
				if ev.Kind == KindRunningAllocations {
					return ev, true
				}
			case <-timer.C:
				return ingest.Event{}, false
			}
		}
	}
	first, ok := next("the first count", 30*time.Second)
	if !ok {
		t.Fatal("no count event within 30s")
	}
	if first.Fields["running"] != n || first.Fields["seeded"] != true || first.NodeID != nodeID || first.Node != "win-seed" {
		t.Fatalf("first count event: %s %v", first.Msg, first.Fields)
	}
	t.Logf("first count event: %s (%s)", first.Msg, first.ID)
	// The replay of the agent's buffer (placement, start) counts nothing.
	if ev, ok := next("a count from the replay", 3*time.Second); ok {
		t.Fatalf("count event during the replay: %s %v", ev.Msg, ev.Fields)
	}
	if st := src.Stats(); st.Seeds != 1 || st.LastIndex == 0 {
		t.Errorf("stats %+v", st)
	}
	// Stopping the job: the count follows down to 0.
	if _, _, err := c.Jobs().Deregister("sleepers", false, nil); err != nil {
		t.Fatal(err)
	}
	last := n
	deadline := time.Now().Add(60 * time.Second)
	for last != 0 && time.Now().Before(deadline) {
		ev, ok := next("a count after the stop", time.Until(deadline))
		if !ok {
			break
		}
		if ev.Fields["prev_running"] != last {
			t.Errorf("count %v after %v, want prev_running %d", ev.Fields["running"], ev.Fields["prev_running"], last)
		}
		last, _ = ev.Fields["running"].(int)
		t.Logf("count event: %s", ev.Msg)
	}
	if last != 0 {
		t.Fatalf("count %d after the job stopped (agent says %d running)", last, running())
	}
}

func ptr[T any](v T) *T { return &v }
