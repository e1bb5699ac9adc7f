package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klaxon-dev/klaxon/ingest"
)

// input is one recorded input decoded in its own goroutine.
type input struct {
	src     ingest.Input
	closer  io.Closer // the file, nil for input in memory
	format  ingest.Format
	batches chan []ingest.Event
	cur     []ingest.Event
	pos     int
	done    chan struct{}
	stats   ingest.ReadStats
	err     error
}

// unknownFormat is the error of an input no registered format reads.
func unknownFormat(name string) error {
	return fmt.Errorf("replay: %s: unknown input format (expected a Nomad agent log (text or JSON), a Nomad event-stream recording (NDJSON), an EVTX file, rendered event XML, a systemd journal file or journal export/JSON)", name)
}

// openFile opens the input in file name and detects its format.
func openFile(name string) (*input, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	head, err := readHead(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("replay: %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("replay: %s: %w", name, err)
	}
	format, ok := ingest.DetectFormat(head)
	if !ok {
		f.Close()
		return nil, unknownFormat(name)
	}
	src := ingest.Input{Name: name, Path: name, At: f, Size: fi.Size(), Stream: f}
	return newInput(src, format, f), nil
}

// openBytes is the input held in data, named name.
func openBytes(name string, data []byte) (*input, error) {
	head := data[:min(len(data), ingest.HeadSize)]
	format, ok := ingest.DetectFormat(head)
	if !ok {
		return nil, unknownFormat(name)
	}
	src := ingest.Input{Name: name, At: bytes.NewReader(data), Size: int64(len(data)), Stream: bytes.NewReader(data)}
	return newInput(src, format, nil), nil
}

func newInput(src ingest.Input, format ingest.Format, closer io.Closer) *input {
	return &input{src: src, closer: closer, format: format, batches: make(chan []ingest.Event, 16), done: make(chan struct{})}
}

// close releases the input's file.
func (in *input) close() {
	if in.closer != nil {
		in.closer.Close()
	}
}

// readHead reads the first bytes of an input, enough to tell its format.
func readHead(r io.Reader) ([]byte, error) {
	head := make([]byte, ingest.HeadSize)
	n, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return head[:n], nil
}

// start decodes the input in batches until its end or until ctx is done.
func (in *input) start(ctx context.Context, opts Options, ident *ingest.Identity) {
	go func() {
		defer close(in.done)
		defer close(in.batches)
		defer in.close()
		src := in.src
		if opts.Progress != nil && !in.format.Whole {
			src.Stream = countingReader{r: src.Stream, n: &opts.Progress.Bytes}
		}
		batch := make([]ingest.Event, 0, batchSize)
		emit := func(ev ingest.Event) {
			batch = append(batch, ev)
			if len(batch) == batchSize {
				select {
				case in.batches <- batch:
				case <-ctx.Done():
				}
				batch = make([]ingest.Event, 0, batchSize)
			}
		}
		cfg := ingest.ReadConfig{DefaultNode: opts.Node, Identity: ident, Log: opts.Log, MaxLineBytes: opts.MaxLineBytes}
		in.stats, in.err = in.format.Read(ctx, src, cfg, emit)
		if opts.Progress != nil && in.format.Whole {
			opts.Progress.Bytes.Add(src.Size)
		}
		if in.err != nil {
			in.err = fmt.Errorf("replay: %s: %w", src.Name, in.err)
		}
		if len(batch) > 0 {
			select {
			case in.batches <- batch:
			case <-ctx.Done():
			}
		}
	}()
}

// next advances to the next event; false at the end of the input.
func (in *input) next() bool {
	in.pos++
	for in.pos >= len(in.cur) {
		b, ok := <-in.batches
		if !ok {
			return false
		}
		in.cur, in.pos = b, 0
	}
	return true
}

func (in *input) head() *ingest.Event { return &in.cur[in.pos] }

func (in *input) wait() {
	for range in.batches {
	}
	<-in.done
}

// inputHeap orders inputs by the time of their next event (file order on ties).
type inputHeap []*input

func (h inputHeap) Len() int { return len(h) }
func (h inputHeap) Less(i, j int) bool {
	return h[i].head().Time.Before(h[j].head().Time)
}
func (h inputHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *inputHeap) Push(x any)   { *h = append(*h, x.(*input)) }
func (h *inputHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
