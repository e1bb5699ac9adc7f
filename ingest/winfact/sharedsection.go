package winfact

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SharedSection is the SharedSection setting of the Windows subsystem
// (HKLM\SYSTEM\CurrentControlSet\Control\Session Manager\SubSystems, value
// Windows): the desktop heap sizes in KB.
type SharedSection struct {
	// SharedKB is the heap shared by every desktop (first number).
	SharedKB int
	// InteractiveKB is the heap of each desktop of the interactive window
	// station, WinSta0 (second number).
	InteractiveKB int
	// NonInteractiveKB is the heap of each desktop of a non-interactive
	// window station (third number): the one services, and so Nomad and its
	// task drivers, allocate from. Windows takes the interactive size when
	// the third number is absent.
	NonInteractiveKB int
	// Explicit reports whether the third number was given.
	Explicit bool
}

// String formats s as Windows writes it: "1024,20480,768".
func (s SharedSection) String() string {
	if !s.Explicit {
		return strconv.Itoa(s.SharedKB) + "," + strconv.Itoa(s.InteractiveKB)
	}
	return strconv.Itoa(s.SharedKB) + "," + strconv.Itoa(s.InteractiveKB) + "," + strconv.Itoa(s.NonInteractiveKB)
}

// DefaultNonInteractiveKB is the non-interactive desktop heap of a Windows
// installation that was not tuned (SharedSection=1024,20480,768): enough
// for about two dozen Nomad allocations (seed 000).
const DefaultNonInteractiveKB = 768

// maxHeapKB bounds a plausible heap size (the session view space is a few
// hundred MB at most); larger numbers are a parsing accident.
const maxHeapKB = 1 << 20

// ErrNoSharedSection is returned by ParseWindowsValue for a value without
// a SharedSection= part.
var ErrNoSharedSection = errors.New("no SharedSection= in the value")

// ParseWindowsValue reads the SharedSection of the SubSystems key's
// Windows value, the csrss.exe command line:
//
//	%SystemRoot%\system32\csrss.exe ObjectDirectory=\Windows SharedSection=1024,20480,768 Windows=On SubSystemType=Windows ...
//
// The name is matched without regard to case; spaces around the commas
// are tolerated (csrss reads the numbers with the same leniency). Two
// numbers mean the non-interactive heap takes the interactive size.
func ParseWindowsValue(v string) (SharedSection, error) {
	rest, ok := findSharedSection(v)
	if !ok {
		return SharedSection{}, ErrNoSharedSection
	}
	// The numbers run up to the next space that is not next to a comma.
	var nums []string
	cur := strings.Builder{}
	i := 0
	for i < len(rest) {
		c := rest[i]
		switch {
		case c == ',':
			nums = append(nums, cur.String())
			cur.Reset()
			i++
			for i < len(rest) && (rest[i] == ' ' || rest[i] == '\t') {
				i++
			}
			continue
		case c == ' ' || c == '\t':
			j := i
			for j < len(rest) && (rest[j] == ' ' || rest[j] == '\t') {
				j++
			}
			if j < len(rest) && rest[j] == ',' {
				i = j
				continue
			}
			i = len(rest)
			continue
		default:
			cur.WriteByte(c)
		}
		i++
	}
	nums = append(nums, cur.String())
	if len(nums) < 2 || len(nums) > 3 {
		return SharedSection{}, fmt.Errorf("SharedSection=%s: want two or three numbers", strings.Join(nums, ","))
	}
	vals := make([]int, len(nums))
	for i, s := range nums {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n > maxHeapKB {
			return SharedSection{}, fmt.Errorf("SharedSection=%s: %q is not a heap size in KB", strings.Join(nums, ","), s)
		}
		vals[i] = n
	}
	s := SharedSection{SharedKB: vals[0], InteractiveKB: vals[1], NonInteractiveKB: vals[1]}
	if len(vals) == 3 {
		s.NonInteractiveKB, s.Explicit = vals[2], true
	}
	return s, nil
}

// findSharedSection returns what follows "SharedSection=" in v, where the
// name starts a word.
func findSharedSection(v string) (string, bool) {
	const name = "sharedsection"
	lower := strings.ToLower(v)
	from := 0
	for {
		i := strings.Index(lower[from:], name)
		if i < 0 {
			return "", false
		}
		i += from
		from = i + len(name)
		if i > 0 && lower[i-1] != ' ' && lower[i-1] != '\t' {
			continue
		}
		j := from
		for j < len(v) && v[j] == ' ' {
			j++
		}
		if j >= len(v) || v[j] != '=' {
			continue
		}
		j++
		for j < len(v) && v[j] == ' ' {
			j++
		}
		return v[j:], true
	}
}
