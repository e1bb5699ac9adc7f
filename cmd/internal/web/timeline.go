package web

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/ingest"
)

// Timeline geometry (SVG user units).
const (
	tlWidth   = 1000.0
	tlLabelW  = 200.0 // lane labels on the left
	tlRight   = 20.0
	tlTop     = 26.0 // room for the markers' labels
	tlLaneH   = 46.0
	tlAxisH   = 30.0
	tlMaxTick = 8
	tlMarkR   = 6.0
)

// lanes are the sources, one lane each, in this order; evidence of any
// other source gets a lane of its own after them. A source without
// evidence in the incident gets no lane.
var lanes = []struct{ source, label string }{
	{ingest.SourceNomadLog, "Nomad agent log"},
	{ingest.SourceNomadEvent, "Nomad event stream"},
	{ingest.SourceWinEvt, "Windows Event Log"},
}

// timeline is the picture of an incident's evidence, ready for the
// template: every coordinate is computed here, the template only draws.
type timeline struct {
	Width, Height float64
	PlotX, PlotW  float64
	Top           float64
	AxisY         float64
	Lanes         []tlLane
	Ticks         []tlTick
	Markers       []tlMarker
	Marks         []tlMark
	From, To      time.Time
}

type tlLane struct {
	Label, Source string
	Y, Mid, H     float64
	Count         int
}

type tlTick struct {
	X     float64
	Label string
}

type tlMarker struct {
	X     float64
	Label string
	Class string
}

type tlMark struct {
	X, Y  float64
	R     float64
	Class string // level-<level>
	Title string
}

// newTimeline lays out the evidence of an incident: one lane per source
// that has evidence, one mark per event on a shared time axis (UTC), and
// vertical markers at the incident's start and resolution.
func newTimeline(in correlate.Incident) timeline {
	tl := timeline{Width: tlWidth, PlotX: tlLabelW, PlotW: tlWidth - tlLabelW - tlRight, Top: tlTop}
	laneOf := map[string]int{}
	has := map[string]bool{}
	for _, e := range in.Evidence {
		has[e.Source] = true
	}
	for _, l := range lanes {
		if !has[l.source] {
			continue
		}
		laneOf[l.source] = len(tl.Lanes)
		tl.Lanes = append(tl.Lanes, tlLane{Label: l.label, Source: l.source})
	}
	for _, e := range in.Evidence {
		if _, ok := laneOf[e.Source]; !ok {
			laneOf[e.Source] = len(tl.Lanes)
			tl.Lanes = append(tl.Lanes, tlLane{Label: e.Source, Source: e.Source})
		}
	}
	for i := range tl.Lanes {
		tl.Lanes[i].Y = tlTop + float64(i)*tlLaneH
		tl.Lanes[i].Mid = tl.Lanes[i].Y + tlLaneH/2
		tl.Lanes[i].H = tlLaneH
	}
	tl.AxisY = tlTop + float64(len(tl.Lanes))*tlLaneH
	tl.Height = tl.AxisY + tlAxisH

	from, to := timeRange(in)
	tl.From, tl.To = from.UTC(), to.UTC()
	x := func(t time.Time) float64 {
		return tl.PlotX + tl.PlotW*float64(t.Sub(from))/float64(to.Sub(from))
	}
	tl.Ticks = ticks(from, to, x)
	if !in.StartedAt.IsZero() {
		tl.Markers = append(tl.Markers, tlMarker{X: x(in.StartedAt), Label: "started", Class: "started"})
	}
	if in.ResolvedAt != nil {
		tl.Markers = append(tl.Markers, tlMarker{X: x(*in.ResolvedAt), Label: "resolved", Class: "resolved"})
	}

	// Marks closer than a diameter in one lane are stacked a little, so
	// that a burst shows as a burst.
	lastX := map[int]float64{}
	stack := map[int]int{}
	for _, e := range in.Evidence {
		li := laneOf[e.Source]
		tl.Lanes[li].Count++
		mx := x(e.Time)
		if lx, ok := lastX[li]; ok && mx-lx < tlMarkR {
			stack[li] = (stack[li] + 1) % 5
		} else {
			stack[li] = 0
		}
		lastX[li] = mx
		offsets := [...]float64{0, -8, 8, -15, 15}
		level := e.Level
		if level == "" {
			level = "info"
		}
		tl.Marks = append(tl.Marks, tlMark{
			X: mx, Y: tl.Lanes[li].Mid + offsets[stack[li]], R: tlMarkR,
			Class: "level-" + level,
			Title: evidenceTitle(e),
		})
	}
	return tl
}

// timeRange is the time axis of an incident's timeline: its evidence, its
// start and its resolution, 10s at least, padded.
func timeRange(in correlate.Incident) (from, to time.Time) {
	extend := func(t time.Time) {
		if t.IsZero() {
			return
		}
		if from.IsZero() || t.Before(from) {
			from = t
		}
		if to.IsZero() || t.After(to) {
			to = t
		}
	}
	for _, e := range in.Evidence {
		extend(e.Time)
	}
	extend(in.StartedAt)
	extend(in.UpdatedAt)
	if in.ResolvedAt != nil {
		extend(*in.ResolvedAt)
	}
	if from.IsZero() {
		from = time.Unix(0, 0)
		to = from
	}
	span := to.Sub(from)
	if span < 10*time.Second {
		mid := from.Add(span / 2)
		from, to, span = mid.Add(-5*time.Second), mid.Add(5*time.Second), 10*time.Second
	}
	pad := span / 20
	return from.Add(-pad), to.Add(pad)
}

// ticks are the labelled ticks of the time axis from..to; x places a time.
func ticks(from, to time.Time, x func(time.Time) float64) []tlTick {
	step := tickStep(to.Sub(from))
	layout := "15:04:05"
	if step >= time.Minute {
		layout = "15:04"
	}
	if step >= 24*time.Hour {
		layout = "Jan 2"
	}
	var out []tlTick
	for t := from.UTC().Truncate(step); !t.After(to); t = t.Add(step) {
		if t.Before(from) {
			continue
		}
		out = append(out, tlTick{X: x(t), Label: t.Format(layout)})
	}
	return out
}

// evidenceTitle is the hover text of a mark.
func evidenceTitle(e correlate.Evidence) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s  %s", e.Time.UTC().Format("2006-01-02 15:04:05.000Z"), e.Source, e.Kind)
	if e.Level != "" {
		fmt.Fprintf(&b, "  [%s]", e.Level)
	}
	if e.Node != "" {
		fmt.Fprintf(&b, "  node=%s", e.Node)
	}
	b.WriteString("\n")
	b.WriteString(clip(e.Msg, 300))
	return b.String()
}

// tickSteps are the axis steps, the first giving at most tlMaxTick ticks
// is used.
var tickSteps = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
	2 * 24 * time.Hour, 7 * 24 * time.Hour,
}

func tickStep(span time.Duration) time.Duration {
	for _, s := range tickSteps {
		if span/s <= tlMaxTick {
			return s
		}
	}
	return span / tlMaxTick
}

// clip shortens s to at most n bytes on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
