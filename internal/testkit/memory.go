package testkit

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ResidentMB is the resident memory of process pid in MB, from
// /proc/pid/status (0 where that is unknown, as on Windows).
func ResidentMB(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// MidEndPeaks returns the peaks of f over the middle and the last third of
// samples taken through a run: memory stayed flat when the last is within
// FlatBound of the middle (the first third is the ramp-up).
func MidEndPeaks[T any](samples []T, f func(T) float64) (mid, end float64) {
	third := len(samples) / 3
	for _, s := range samples[third : 2*third] {
		mid = max(mid, f(s))
	}
	for _, s := range samples[2*third:] {
		end = max(end, f(s))
	}
	return mid, end
}

// Grew reports whether a last third's peak is past 1.5× the middle third's
// plus margin (MB): the bound the soak and the sustained benchmark hold
// memory to.
func Grew(mid, end, margin float64) bool { return end > 1.5*mid+margin }
