package web_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// cdp drives headless chromium through the DevTools protocol over
// --remote-debugging-pipe (JSON messages ending in NUL on file
// descriptors 3 and 4): no WebSocket, no library. It is enough to load
// pages, fill and submit forms, read the DOM and take screenshots at a
// chosen viewport.
type cdp struct {
	t       *testing.T
	cmd     *exec.Cmd
	w       io.WriteCloser
	mu      sync.Mutex
	next    int
	waiting map[int]chan cdpReply
	events  chan cdpEvent
	session string
	stderr  bytes.Buffer
	done    chan struct{}
}

type cdpReply struct {
	Result json.RawMessage
	Error  *struct {
		Code    int
		Message string
	}
}

type cdpEvent struct {
	Method    string
	SessionID string
	Params    json.RawMessage
}

// startCDP starts chromium with a fresh profile and opens one page.
func startCDP(t *testing.T, bin string) *cdp {
	t.Helper()
	toChrome, ourW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ourR, fromChrome, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &cdp{t: t, w: ourW, waiting: map[int]chan cdpReply{}, events: make(chan cdpEvent, 256), done: make(chan struct{})}
	c.cmd = exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--disable-dev-shm-usage", "--remote-debugging-pipe", "--user-data-dir="+t.TempDir(), "about:blank")
	c.cmd.ExtraFiles = []*os.File{toChrome, fromChrome} // fd 3: chromium reads, fd 4: it writes
	c.cmd.Stderr = &c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toChrome.Close()
	fromChrome.Close()
	go c.read(ourR)
	t.Cleanup(c.close)
	var target struct{ TargetID string }
	c.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var att struct{ SessionID string }
	c.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	c.session = att.SessionID
	c.call(c.session, "Page.enable", nil, nil)
	c.call(c.session, "Runtime.enable", nil, nil)
	return c
}

func (c *cdp) read(r io.Reader) {
	defer close(c.done)
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		msg = msg[:len(msg)-1]
		var m struct {
			ID int `json:"id"`
			cdpReply
			cdpEvent
		}
		if json.Unmarshal(msg, &m) != nil {
			continue
		}
		if m.ID != 0 {
			c.mu.Lock()
			ch := c.waiting[m.ID]
			delete(c.waiting, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m.cdpReply
			}
			continue
		}
		select {
		case c.events <- m.cdpEvent:
		default: // nobody waits for old events
		}
	}
}

func (c *cdp) close() {
	c.w.Close()
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
	<-c.done
	if c.t.Failed() {
		c.t.Logf("chromium stderr:\n%s", tail(c.stderr.String(), 2000))
	}
}

// call sends one command and decodes its result into out.
func (c *cdp) call(session, method string, params any, out any) {
	c.t.Helper()
	if err := c.try(session, method, params, out); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cdp) try(session, method string, params any, out any) error {
	c.mu.Lock()
	c.next++
	id := c.next
	ch := make(chan cdpReply, 1)
	c.waiting[id] = ch
	c.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	b, _ := json.Marshal(msg)
	if _, err := c.w.Write(append(b, 0)); err != nil {
		return fmt.Errorf("cdp %s: %w", method, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return fmt.Errorf("cdp %s: %d %s", method, r.Error.Code, r.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("cdp %s: no answer in 30s", method)
	}
}

// drain forgets the events received so far.
func (c *cdp) drain() {
	for {
		select {
		case <-c.events:
		default:
			return
		}
	}
}

// waitLoad waits for the page's load event.
func (c *cdp) waitLoad() {
	c.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-c.events:
			if ev.Method == "Page.loadEventFired" && ev.SessionID == c.session {
				return
			}
		case <-deadline:
			c.t.Fatal("cdp: page did not load in 30s")
		}
	}
}

// navigate loads url and waits for it.
func (c *cdp) navigate(url string) {
	c.t.Helper()
	c.drain()
	var r struct{ ErrorText string }
	c.call(c.session, "Page.navigate", map[string]any{"url": url}, &r)
	if r.ErrorText != "" {
		c.t.Fatalf("navigate %s: %s", url, r.ErrorText)
	}
	c.waitLoad()
}

// submit runs js (which submits a form or follows a link) and waits for
// the page it leads to.
func (c *cdp) submit(js string) {
	c.t.Helper()
	c.drain()
	c.eval(js)
	c.waitLoad()
}

// eval evaluates a JavaScript expression in the page (promises awaited)
// and returns its value as JSON.
func (c *cdp) eval(expr string) json.RawMessage {
	c.t.Helper()
	var r struct {
		Result struct {
			Value json.RawMessage
		}
		ExceptionDetails *struct {
			Text      string
			Exception struct{ Description string }
		}
	}
	c.call(c.session, "Runtime.evaluate", map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true}, &r)
	if r.ExceptionDetails != nil {
		c.t.Fatalf("eval %s: %s %s", expr, r.ExceptionDetails.Text, r.ExceptionDetails.Exception.Description)
	}
	return r.Result.Value
}

// evalString and evalBool evaluate expr to a string or a boolean.
func (c *cdp) evalString(expr string) string {
	c.t.Helper()
	var s string
	if err := json.Unmarshal(c.eval(expr), &s); err != nil {
		c.t.Fatalf("eval %s: %v", expr, err)
	}
	return s
}

func (c *cdp) evalBool(expr string) bool {
	c.t.Helper()
	var b bool
	_ = json.Unmarshal(c.eval(expr), &b)
	return b
}

// waitTrue polls expr until it is true.
func (c *cdp) waitTrue(what, expr string, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for !c.evalBool(expr) {
		if time.Now().After(deadline) {
			c.t.Fatalf("cdp: %s: not within %s (%s)", what, d, expr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// viewport sets the window's CSS size; mobile makes it a phone (touch,
// no scrollbars, the viewport meta tag honoured).
func (c *cdp) viewport(w, h int, mobile bool) {
	c.t.Helper()
	c.call(c.session, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": w, "height": h, "deviceScaleFactor": 1, "mobile": mobile,
	}, nil)
}

// screenshot writes a PNG of the viewport to path.
func (c *cdp) screenshot(path string) {
	c.t.Helper()
	var r struct{ Data string }
	c.call(c.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &r)
	b, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

var _ = context.Background
