//go:build windows

package winfact

import (
	"fmt"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
)

// SubSystemsKey is the key (under HKEY_LOCAL_MACHINE) whose Windows value
// holds SharedSection.
const SubSystemsKey = `SYSTEM\CurrentControlSet\Control\Session Manager\SubSystems`

// registryReader reads a SubSystems key (the local machine's; another in
// tests).
type registryReader struct {
	root registry.Key
	name string // root's name in messages
	path string
}

// NewRegistryReader returns the Reader of the local registry.
func NewRegistryReader() (Reader, error) {
	return registryReader{root: registry.LOCAL_MACHINE, name: "HKLM", path: SubSystemsKey}, nil
}

// Read implements Reader: the Windows value (REG_EXPAND_SZ, read as it is
// written), the key's last write time and the boot time.
func (rr registryReader) Read() (Reading, error) {
	k, err := registry.OpenKey(rr.root, rr.path, registry.QUERY_VALUE)
	if err != nil {
		return Reading{}, fmt.Errorf(`winfact: open %s\%s: %w`, rr.name, rr.path, err)
	}
	defer k.Close()
	v, _, err := k.GetStringValue("Windows")
	if err != nil {
		return Reading{}, fmt.Errorf(`winfact: %s\%s, value Windows: %w`, rr.name, rr.path, err)
	}
	r := Reading{Value: v, Boot: time.Now().Add(-windows.DurationSinceBoot()).Truncate(time.Second)}
	if ki, err := k.Stat(); err == nil {
		r.Modified = ki.ModTime()
	}
	return r, nil
}
