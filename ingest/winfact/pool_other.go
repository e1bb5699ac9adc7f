//go:build !windows

package winfact

import "errors"

// NewPoolSampler returns an error: the kernel pools are Windows' (tests
// give a sampler of recorded series).
func NewPoolSampler() (PoolSampler, error) {
	return nil, errors.New("winfact: kernel pool sampling is only available on Windows")
}
