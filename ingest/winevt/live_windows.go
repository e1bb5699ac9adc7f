//go:build windows

package winevt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/klaxon-dev/klaxon/ingest"
)

const isWindows = true

var (
	wevtapi               = windows.NewLazySystemDLL("wevtapi.dll")
	procEvtSubscribe      = wevtapi.NewProc("EvtSubscribe")
	procEvtNext           = wevtapi.NewProc("EvtNext")
	procEvtRender         = wevtapi.NewProc("EvtRender")
	procEvtClose          = wevtapi.NewProc("EvtClose")
	procEvtCreateBookmark = wevtapi.NewProc("EvtCreateBookmark")
	procEvtUpdateBookmark = wevtapi.NewProc("EvtUpdateBookmark")

	procEvtOpenPublisherMetadata = wevtapi.NewProc("EvtOpenPublisherMetadata")
	procEvtFormatMessage         = wevtapi.NewProc("EvtFormatMessage")
)

// EvtSubscribe flags and EvtRender flags (winevt.h).
const (
	evtSubscribeToFutureEvents     = 1
	evtSubscribeStartAfterBookmark = 3
	evtRenderEventXML              = 1
	evtRenderBookmark              = 2
	evtBatch                       = 64
	evtFormatMessageEvent          = 1
)

// liveSource subscribes to Windows event channels.
type liveSource struct {
	cfg  LiveConfig
	log  *slog.Logger
	norm *normalizer
}

// NewLive returns a source that subscribes to the channels through
// EvtSubscribe, starting after the bookmark stored in the checkpoints (or
// with future events), renders each event with EvtRender(EvtRenderEventXml)
// and decodes it with the same normaliser as ReadXML. Each event's Commit
// stores the bookmark XML of the channel up to that event.
func NewLive(cfg LiveConfig, log *slog.Logger) (ingest.Source, error) {
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.Channels) == 0 {
		cfg.Channels = DefaultChannels
	}
	if cfg.Query == "" {
		cfg.Query = "*"
	}
	for i, c := range cfg.Channels {
		if strings.TrimSpace(c) == "" {
			return nil, fmt.Errorf("winevt: channels[%d]: empty", i)
		}
	}
	if err := wevtapi.Load(); err != nil {
		return nil, fmt.Errorf("winevt: wevtapi.dll: %w", err)
	}
	return &liveSource{cfg: cfg, log: log, norm: &normalizer{ident: cfg.Identity}}, nil
}

// Name identifies the source in logs and metrics.
func (s *liveSource) Name() string { return "winevt-live:" + strings.Join(s.cfg.Channels, ",") }

// Run follows the channels until ctx is done; it never closes out.
func (s *liveSource) Run(ctx context.Context, out chan<- ingest.Event) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.cfg.Channels))
	for i, ch := range s.cfg.Channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.runChannel(ctx, ch, out)
		}()
	}
	wg.Wait()
	if s.cfg.Checkpoints != nil {
		if err := s.cfg.Checkpoints.Flush(); err != nil {
			s.log.Error("winevt: writing checkpoints", "error", err)
		}
	}
	return errors.Join(errs...)
}

func evtClose(h uintptr) {
	if h != 0 {
		procEvtClose.Call(h)
	}
}

// render renders an event or bookmark handle as XML.
func render(h uintptr, flag uintptr) (string, error) {
	var used, props uint32
	r, _, err := procEvtRender.Call(0, h, flag, 0, 0, uintptr(unsafe.Pointer(&used)), uintptr(unsafe.Pointer(&props)))
	if r == 0 && err != windows.ERROR_INSUFFICIENT_BUFFER {
		return "", fmt.Errorf("EvtRender: %w", err)
	}
	buf := make([]uint16, used/2+1)
	r, _, err = procEvtRender.Call(0, h, flag, uintptr(len(buf)*2), uintptr(unsafe.Pointer(&buf[0])),
		uintptr(unsafe.Pointer(&used)), uintptr(unsafe.Pointer(&props)))
	if r == 0 {
		return "", fmt.Errorf("EvtRender: %w", err)
	}
	return windows.UTF16ToString(buf), nil
}

func (s *liveSource) runChannel(ctx context.Context, channel string, out chan<- ingest.Event) error {
	key := "winevt-live:" + channel
	chPtr, err := windows.UTF16PtrFromString(channel)
	if err != nil {
		return fmt.Errorf("winevt: channel %q: %w", channel, err)
	}
	qPtr, err := windows.UTF16PtrFromString(s.cfg.Query)
	if err != nil {
		return fmt.Errorf("winevt: query %q: %w", s.cfg.Query, err)
	}
	var saved string
	if s.cfg.Checkpoints != nil {
		if _, err := s.cfg.Checkpoints.Get(key, &saved); err != nil {
			s.log.Warn("winevt: unreadable bookmark; starting with future events", "channel", channel, "error", err)
			saved = ""
		}
	}
	var bm uintptr
	flags := uintptr(evtSubscribeToFutureEvents)
	if saved != "" {
		p, err := windows.UTF16PtrFromString(saved)
		if err == nil {
			bm, _, err = procEvtCreateBookmark.Call(uintptr(unsafe.Pointer(p)))
		}
		if bm != 0 {
			flags = evtSubscribeStartAfterBookmark
		} else {
			s.log.Warn("winevt: bad bookmark; starting with future events", "channel", channel, "error", err)
		}
	}
	if bm == 0 {
		if bm, _, err = procEvtCreateBookmark.Call(0); bm == 0 {
			return fmt.Errorf("winevt: channel %s: EvtCreateBookmark: %w", channel, err)
		}
	}
	defer evtClose(bm)
	signal, err := windows.CreateEvent(nil, 1, 1, nil)
	if err != nil {
		return fmt.Errorf("winevt: channel %s: CreateEvent: %w", channel, err)
	}
	defer windows.CloseHandle(signal)
	var subBM uintptr
	if flags == evtSubscribeStartAfterBookmark {
		subBM = bm
	}
	sub, _, err := procEvtSubscribe.Call(0, uintptr(signal), uintptr(unsafe.Pointer(chPtr)), uintptr(unsafe.Pointer(qPtr)), subBM, 0, 0, flags)
	if sub == 0 {
		return fmt.Errorf("winevt: channel %s: EvtSubscribe: %w", channel, err)
	}
	defer evtClose(sub)
	s.log.Info("winevt: subscribed to channel", "channel", channel, "query", s.cfg.Query, "from_bookmark", flags == evtSubscribeStartAfterBookmark)
	lastFlush := time.Now()
	handles := make([]uintptr, evtBatch)
	pubs := publishers{}
	defer pubs.close()
	for ctx.Err() == nil {
		ev, _ := windows.WaitForSingleObject(signal, 500)
		if s.cfg.Checkpoints != nil && time.Since(lastFlush) > time.Second {
			if err := s.cfg.Checkpoints.Flush(); err != nil {
				s.log.Error("winevt: writing checkpoints", "error", err)
			}
			lastFlush = time.Now()
		}
		if ev != windows.WAIT_OBJECT_0 {
			continue
		}
		for ctx.Err() == nil {
			var n uint32
			r, _, err := procEvtNext.Call(sub, evtBatch, uintptr(unsafe.Pointer(&handles[0])), 0, 0, uintptr(unsafe.Pointer(&n)))
			if r == 0 {
				if err == windows.ERROR_NO_MORE_ITEMS || err == windows.ERROR_TIMEOUT {
					windows.ResetEvent(signal)
					break
				}
				return fmt.Errorf("winevt: channel %s: EvtNext: %w", channel, err)
			}
			for i := 0; i < int(n); i++ {
				s.deliver(ctx, channel, key, handles[i], bm, pubs, out)
				evtClose(handles[i])
			}
		}
	}
	return nil
}

// publishers caches the publisher metadata handles EvtFormatMessage needs,
// one per provider (0: the provider's metadata could not be opened; not
// asked again). One channel's goroutine uses it.
type publishers map[string]uintptr

func (p publishers) open(provider string) (uintptr, error) {
	if h, ok := p[provider]; ok {
		if h == 0 {
			return 0, fmt.Errorf("no publisher metadata for %q", provider)
		}
		return h, nil
	}
	name, err := windows.UTF16PtrFromString(provider)
	if err != nil {
		p[provider] = 0
		return 0, err
	}
	h, _, err := procEvtOpenPublisherMetadata.Call(0, uintptr(unsafe.Pointer(name)), 0, 0, 0)
	p[provider] = h
	if h == 0 {
		return 0, fmt.Errorf("EvtOpenPublisherMetadata(%q): %w", provider, err)
	}
	return h, nil
}

func (p publishers) close() {
	for _, h := range p {
		evtClose(h)
	}
}

// handleEvent is a live event handle (liveEvent).
type handleEvent struct {
	h    uintptr
	pubs publishers
}

func (e handleEvent) XML() (string, error) { return render(e.h, evtRenderEventXML) }

// Message renders the event's message with EvtFormatMessage
// (EvtFormatMessageEvent), which resolves the "%%N" parameter inserts
// from the provider's ParameterMessageFile.
func (e handleEvent) Message(provider string) (string, error) {
	if provider == "" {
		return "", nil
	}
	pub, err := e.pubs.open(provider)
	if err != nil {
		return "", err
	}
	var used uint32
	r, _, err := procEvtFormatMessage.Call(pub, e.h, 0, 0, 0, evtFormatMessageEvent, 0, 0, uintptr(unsafe.Pointer(&used)))
	if r == 0 && err != windows.ERROR_INSUFFICIENT_BUFFER {
		return "", fmt.Errorf("EvtFormatMessage: %w", err)
	}
	buf := make([]uint16, used+1)
	r, _, err = procEvtFormatMessage.Call(pub, e.h, 0, 0, 0, evtFormatMessageEvent,
		uintptr(len(buf)), uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&used)))
	if r == 0 {
		return "", fmt.Errorf("EvtFormatMessage: %w", err)
	}
	return windows.UTF16ToString(buf), nil
}

// deliver renders one event (XML and message) and sends it.
func (s *liveSource) deliver(ctx context.Context, channel, key string, h, bm uintptr, pubs publishers, out chan<- ingest.Event) {
	e, msgErr, err := decodeLive(handleEvent{h: h, pubs: pubs}, s.norm)
	if err != nil {
		s.log.Warn("winevt: cannot render event", "channel", channel, "error", err)
		return
	}
	if msgErr != nil {
		s.log.Debug("winevt: no message from the provider; rendered by klaxon", "channel", channel, "kind", e.Kind, "error", msgErr)
	}
	var bmXML string
	if r, _, err := procEvtUpdateBookmark.Call(bm, h); r != 0 {
		bmXML, _ = render(bm, evtRenderBookmark)
	} else {
		s.log.Warn("winevt: EvtUpdateBookmark failed", "channel", channel, "error", err)
	}
	if cps := s.cfg.Checkpoints; cps != nil && bmXML != "" {
		b := bmXML
		e.Commit = func() { _ = cps.Set(key, b) }
	}
	select {
	case out <- e:
	case <-ctx.Done():
	}
}
