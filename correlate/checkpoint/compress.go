package checkpoint

import (
	"bytes"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Items are stored compressed.
//
// A group's item is JSON with its window's timestamps and up to
// MaxEvidence events with their fields: 8–12 KB for a busy group of the
// bundled rules, and a fleet whose nodes all change at once (a rollout, a
// soak's lock-step loops) changes tens of thousands of them between two
// checkpoints. On a 3-node R3 cluster every byte is written three times,
// so the bytes were what made such a checkpoint take a minute. zstd at its
// fastest level makes them about 6× smaller (the soak's items: 11.8 KB →
// 1.9 KB) for ~17 µs per item on one core, and reads back at ~6 µs; the
// records say whether they are compressed (header field "z"), so the
// uncompressed records of earlier versions are read as before.

// compressFrom is the smallest payload worth compressing: a source clock's
// item (~100 bytes) would not get smaller.
const compressFrom = 256

// maxItemBytes bounds what one compressed record may expand to on read.
const maxItemBytes = 1 << 30

var zstdCodec = sync.OnceValues(func() (*zstd.Encoder, *zstd.Decoder) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	if err != nil {
		panic(err) // only for invalid options
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithDecoderMaxMemory(maxItemBytes))
	if err != nil {
		panic(err)
	}
	return enc, dec
})

// compress returns payload compressed and true, or payload itself and false
// when it is small or would not get smaller.
func compress(payload []byte) ([]byte, bool) {
	if len(payload) < compressFrom {
		return payload, false
	}
	enc, _ := zstdCodec()
	z := enc.EncodeAll(payload, make([]byte, 0, len(payload)/4))
	if len(z) >= len(payload) {
		return payload, false
	}
	return z, true
}

// zstdMagic starts every zstd frame; an item's JSON starts with '{'.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// isCompressed reports whether an item's payload is a compressed one.
func isCompressed(payload []byte) bool { return bytes.HasPrefix(payload, zstdMagic) }

// decompress returns the payload of a record stored compressed.
func decompress(z []byte) ([]byte, error) {
	_, dec := zstdCodec()
	b, err := dec.DecodeAll(z, nil)
	if err != nil {
		return nil, fmt.Errorf("decompress: %w", err)
	}
	return b, nil
}
