package winevt

import (
	"bytes"
	"io"
	"log"
	"sync"
	"sync/atomic"
)

// golang-evtx reports what it cannot parse through
// github.com/0xrawsec/golang-utils/log, whose only output is the standard
// library's default logger (log.Output): "PANIC - <error>" followed by a
// goroutine stack (log.DontPanicf, printed whatever the level), "ERROR - …"
// and so on. That library has no writer of its own to configure, so the
// package configures the logger it writes through: log's output is wrapped
// once by libHook, which keeps golang-evtx's lines written while a call of
// this package into golang-evtx runs (callLib) and passes every other line on
// to the previous output unchanged. os.Stderr itself is never touched.
//
// Captured lines become one structured warning per record (their first
// lines, without the stacks), counted in Stats.ParserWarnings.

// libPrefixes are the level prefixes golang-utils/log puts before a message.
var libPrefixes = [][]byte{
	[]byte("PANIC - "), []byte("ERROR - "), []byte("CRITICAL - "), []byte("WARNING - "),
	[]byte("INFO - "), []byte("DEBUG - "), []byte("ABORT - "),
}

// libCapture collects the messages of one golang-evtx call.
type libCapture struct{ msgs *[]string }

var (
	// libMu serialises the calls into golang-evtx, so that whatever it
	// logs meanwhile belongs to the running call.
	libMu  sync.Mutex
	libCur atomic.Pointer[libCapture]

	hookMu sync.Mutex
	hook   atomic.Pointer[libHook]
)

// libHook is the standard logger's output while this package runs.
type libHook struct{ next io.Writer }

// Write keeps a golang-evtx line during a call (callLib) and passes
// anything else on.
func (h *libHook) Write(p []byte) (int, error) {
	if c := libCur.Load(); c != nil {
		if msg, ok := libMessage(p); ok {
			*c.msgs = append(*c.msgs, msg)
			return len(p), nil
		}
	}
	return h.next.Write(p)
}

// libMessage returns the first line of a golang-utils/log message without
// its level prefix (nor the standard logger's date and file prefixes), and
// false for a line that is not one.
func libMessage(p []byte) (string, bool) {
	head := p[:min(len(p), 512)]
	if nl := bytes.IndexByte(head, '\n'); nl >= 0 {
		head = head[:nl]
	}
	for _, pre := range libPrefixes {
		if i := bytes.Index(head, pre); i >= 0 && stdHeader(head[:i]) {
			line := p[i:]
			if nl := bytes.IndexByte(line, '\n'); nl >= 0 {
				line = line[:nl]
			}
			return string(bytes.TrimSpace(line)), true
		}
	}
	return "", false
}

// stdHeader reports whether h is what the standard logger puts before a
// message: its prefix, date, time and file:line, as its flags say.
func stdHeader(h []byte) bool {
	pfx := []byte(log.Prefix())
	h = bytes.TrimSuffix(bytes.TrimPrefix(h, pfx), pfx)
	if j := bytes.LastIndex(h, []byte(".go:")); j >= 0 { // Lshortfile, Llongfile
		h = h[:bytes.LastIndexByte(h[:j], ' ')+1]
	}
	for _, c := range h {
		if (c < '0' || c > '9') && c != '/' && c != ':' && c != '.' && c != ' ' {
			return false
		}
	}
	return true
}

// installHook wraps the standard logger's output with libHook, again if
// someone has replaced it since (slog.SetDefault does).
func installHook() {
	if h := hook.Load(); h != nil && log.Writer() == io.Writer(h) {
		return
	}
	hookMu.Lock()
	defer hookMu.Unlock()
	cur := log.Writer()
	if h := hook.Load(); h != nil && cur == io.Writer(h) {
		return
	}
	h := &libHook{next: cur}
	log.SetOutput(h)
	hook.Store(h)
}

// callLib runs f, a call into golang-evtx, and appends the messages the
// library logs during it (one line each) to dst, also when f panics.
func callLib(dst *[]string, f func()) {
	installHook()
	libMu.Lock()
	defer libMu.Unlock()
	libCur.Store(&libCapture{msgs: dst})
	defer libCur.Store(nil)
	f()
}
