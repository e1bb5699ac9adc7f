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

// registryReader reads the SubSystems key of the local machine.
type registryReader struct{}

// NewRegistryReader returns the Reader of the local registry.
func NewRegistryReader() (Reader, error) { return registryReader{}, nil }

// Read implements Reader: the Windows value (REG_EXPAND_SZ, read as it is
// written), the key's last write time and the boot time.
func (registryReader) Read() (Reading, error) {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, SubSystemsKey, registry.QUERY_VALUE)
	if err != nil {
		return Reading{}, fmt.Errorf(`winfact: open HKLM\%s: %w`, SubSystemsKey, err)
	}
	defer k.Close()
	v, _, err := k.GetStringValue("Windows")
	if err != nil {
		return Reading{}, fmt.Errorf(`winfact: HKLM\%s, value Windows: %w`, SubSystemsKey, err)
	}
	r := Reading{Value: v, Boot: time.Now().Add(-windows.DurationSinceBoot()).Truncate(time.Second)}
	if ki, err := k.Stat(); err == nil {
		r.Modified = ki.ModTime()
	}
	return r, nil
}
