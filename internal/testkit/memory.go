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
