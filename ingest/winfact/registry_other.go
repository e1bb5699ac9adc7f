//go:build !windows

package winfact

import "errors"

// NewRegistryReader returns an error: the registry only exists on Windows
// (tests give a Reader of recorded readings).
func NewRegistryReader() (Reader, error) {
	return nil, errors.New("winfact: the Windows registry is only available on Windows")
}
