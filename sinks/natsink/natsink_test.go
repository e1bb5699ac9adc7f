package natsink

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/sinks/internal/sinktest"
)

func TestCorePublish(t *testing.T) {
	nc, _ := sinktest.StartJetStream(t)
	sub, err := nc.SubscribeSync("ops.incidents")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New("nats", nc, Config{Subject: "ops.incidents"})
	if err != nil {
		t.Fatal(err)
	}
	in := sinktest.Lifecycle("x1", "n", 0)[0]
	if _, err := s.Send(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var back correlate.Incident
	if json.Unmarshal(msg.Data, &back) != nil || back.ChangeID() != in.ChangeID() || msg.Header.Get("Klaxon-Status") != "firing" {
		t.Fatalf("got %s %v", msg.Data, msg.Header)
	}
}

func TestJetStreamPublishDedup(t *testing.T) {
	nc, js := sinktest.StartJetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OPS", Subjects: []string{"ops.>"}}); err != nil {
		t.Fatal(err)
	}
	s, err := New("nats", nc, Config{Subject: "ops.incidents", JetStream: true})
	if err != nil {
		t.Fatal(err)
	}
	in := sinktest.Lifecycle("x2", "n", 0)[0]
	for i := 0; i < 2; i++ { // a redelivery
		if _, err := s.Send(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := js.Stream(ctx, "OPS")
	info, _ := st.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d, want 1 (deduplicated)", info.State.Msgs)
	}
}

func TestValidate(t *testing.T) {
	for subj, want := range map[string]string{"": "required", "ops.*": "literal", "klaxon.incidents.x": "klaxon's own", "klaxon.dlq": "klaxon's own", "ops.ok": ""} {
		c := Config{Subject: subj}
		err := c.Validate("sinks[6]")
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "sinks[6].subject")) {
			t.Errorf("%q: %v", subj, err)
		}
	}
}
