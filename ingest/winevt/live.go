package winevt

import (
	"encoding/xml"
	"fmt"
	"strings"

	"github.com/klaxon-dev/klaxon/ingest"
)

// DefaultChannels are the channels LiveConfig subscribes to by default.
var DefaultChannels = []string{"System", "Application"}

// LiveConfig configures the live Windows Event Log source (NewLive).
type LiveConfig struct {
	// Channels to subscribe to (default System and Application).
	Channels []string
	// Query is the XPath filter of the subscription (default "*").
	Query string
	// Checkpoints stores the bookmark XML per channel (key
	// "winevt-live:<channel>"), advanced by the events' Commit; may be nil
	// (then only future events are read).
	Checkpoints *ingest.Checkpoints
	// Identity is the shared node identity map; may be nil.
	Identity *ingest.Identity
}

// liveEvent is one event of a live subscription as the Windows API gives
// it. The Windows source implements it on event handles (EvtRender,
// EvtFormatMessage); tests give recorded data, so that what the live source
// makes of an event is tested on every system.
type liveEvent interface {
	// XML is the event as EvtRender(EvtRenderEventXml) renders it: System
	// and EventData, no message.
	XML() (string, error)
	// Message is the event's message as Windows renders it from the
	// provider's message table with its inserts ("%%N" references
	// included) resolved: EvtFormatMessage(EvtFormatMessageEvent). "" (or
	// an error) when the provider or its message is unknown here.
	Message(provider string) (string, error)
}

// decodeLive turns a live event into its Event: the XML with the message
// Windows rendered as RenderingInfo/Message, as `wevtutil qe
// /f:RenderedXml` gives it, through the normaliser (which renders what it
// knows itself when Windows has no message). msgErr is the error of
// Message, for the caller to log; the event is decoded all the same.
func decodeLive(le liveEvent, n *normalizer) (ev ingest.Event, msgErr, err error) {
	x, err := le.XML()
	if err != nil {
		return ingest.Event{}, nil, err
	}
	d := xml.NewDecoder(strings.NewReader(x))
	var root *elem
	for root == nil {
		tok, err := d.Token()
		if err != nil {
			return ingest.Event{}, nil, fmt.Errorf("winevt: rendered event: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "Event" {
			if root, err = buildElem(d, se, 0); err != nil {
				return ingest.Event{}, nil, fmt.Errorf("winevt: rendered event: %w", err)
			}
		}
	}
	if root.child("RenderingInfo").childText("Message") == "" {
		prov := root.child("System").child("Provider")
		provider := strings.TrimSpace(prov.attr("Name"))
		if provider == "" {
			provider = strings.TrimSpace(prov.attr("EventSourceName"))
		}
		msg, err := le.Message(provider)
		msgErr = err
		if msg = strings.TrimSpace(msg); msg != "" {
			root.kids = append(root.kids, &elem{name: "RenderingInfo", kids: []*elem{{name: "Message", text: msg}}})
		}
	}
	ev, _ = n.normalize(root, zeroTime)
	return ev, msgErr, nil
}
