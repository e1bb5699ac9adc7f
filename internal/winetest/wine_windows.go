package winetest

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/windows"
)

var version = sync.OnceValue(func() string {
	p := windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version")
	if p.Find() != nil {
		return ""
	}
	r, _, _ := p.Call() // const char *wine_get_version(void): a static string in ntdll
	if r == 0 {
		return "?"
	}
	return windows.BytePtrToString(*(**byte)(unsafe.Pointer(&r)))
})
