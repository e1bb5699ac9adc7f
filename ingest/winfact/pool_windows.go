//go:build windows

package winfact

import (
	"fmt"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

var (
	kernel32                 = windows.NewLazySystemDLL("kernel32.dll")
	procGetPerformanceInfo   = kernel32.NewProc("K32GetPerformanceInfo")
	procGetProcessMemoryInfo = kernel32.NewProc("K32GetProcessMemoryInfo")
	procGetProcessHandleCnt  = kernel32.NewProc("GetProcessHandleCount")
)

// performanceInformation is PERFORMANCE_INFORMATION (psapi.h); sizes in pages.
type performanceInformation struct {
	cb                uint32
	CommitTotal       uintptr
	CommitLimit       uintptr
	CommitPeak        uintptr
	PhysicalTotal     uintptr
	PhysicalAvailable uintptr
	SystemCache       uintptr
	KernelTotal       uintptr
	KernelPaged       uintptr
	KernelNonpaged    uintptr
	PageSize          uintptr
	HandleCount       uint32
	ProcessCount      uint32
	ThreadCount       uint32
}

// processMemoryCounters is PROCESS_MEMORY_COUNTERS (psapi.h).
type processMemoryCounters struct {
	cb                         uint32
	PageFaultCount             uint32
	PeakWorkingSetSize         uintptr
	WorkingSetSize             uintptr
	QuotaPeakPagedPoolUsage    uintptr
	QuotaPagedPoolUsage        uintptr
	QuotaPeakNonPagedPoolUsage uintptr
	QuotaNonPagedPoolUsage     uintptr
	PagefileUsage              uintptr
	PeakPagefileUsage          uintptr
}

// systemSampler samples this machine.
type systemSampler struct{}

// NewPoolSampler returns the sampler of this machine: GetPerformanceInfo
// for the pools, and every process it may open (PROCESS_QUERY_LIMITED_INFORMATION:
// an administrator's service sees them all) for its pool charge and handles.
func NewPoolSampler() (PoolSampler, error) {
	if err := procGetPerformanceInfo.Find(); err != nil {
		return nil, fmt.Errorf("winfact: K32GetPerformanceInfo: %w", err)
	}
	return systemSampler{}, nil
}

// SamplePool implements PoolSampler.
func (systemSampler) SamplePool() (PoolSample, error) {
	var pi performanceInformation
	pi.cb = uint32(unsafe.Sizeof(pi))
	if r, _, err := procGetPerformanceInfo.Call(uintptr(unsafe.Pointer(&pi)), uintptr(pi.cb)); r == 0 {
		return PoolSample{}, fmt.Errorf("winfact: GetPerformanceInfo: %w", err)
	}
	page := uint64(pi.PageSize)
	s := PoolSample{
		Time:             time.Now(),
		PagedBytes:       uint64(pi.KernelPaged) * page,
		NonpagedBytes:    uint64(pi.KernelNonpaged) * page,
		PhysicalBytes:    uint64(pi.PhysicalTotal) * page,
		CommitBytes:      uint64(pi.CommitTotal) * page,
		CommitLimitBytes: uint64(pi.CommitLimit) * page,
		Handles:          pi.HandleCount,
		Processes:        pi.ProcessCount,
	}
	pids := make([]uint32, 4096)
	for {
		var n uint32
		if err := windows.EnumProcesses(pids, &n); err != nil {
			return s, nil // the pools without the processes
		}
		if int(n)/4 < len(pids) {
			pids = pids[:n/4]
			break
		}
		pids = make([]uint32, 2*len(pids))
	}
	for _, pid := range pids {
		if pid == 0 {
			continue
		}
		if p, err := processPool(pid); err == nil {
			s.Procs = append(s.Procs, p)
		}
	}
	return s, nil
}

func processPool(pid uint32) (ProcessPool, error) {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, pid)
	if err != nil {
		return ProcessPool{}, err
	}
	defer windows.CloseHandle(h)
	var mc processMemoryCounters
	mc.cb = uint32(unsafe.Sizeof(mc))
	if r, _, err := procGetProcessMemoryInfo.Call(uintptr(h), uintptr(unsafe.Pointer(&mc)), uintptr(mc.cb)); r == 0 {
		return ProcessPool{}, err
	}
	p := ProcessPool{PID: pid, PagedBytes: uint64(mc.QuotaPagedPoolUsage), NonpagedBytes: uint64(mc.QuotaNonPagedPoolUsage)}
	var handles uint32
	if r, _, _ := procGetProcessHandleCnt.Call(uintptr(h), uintptr(unsafe.Pointer(&handles))); r != 0 {
		p.Handles = handles
	}
	buf := make([]uint16, windows.MAX_PATH)
	size := uint32(len(buf))
	if err := windows.QueryFullProcessImageName(h, 0, &buf[0], &size); err == nil {
		p.Name = filepath.Base(windows.UTF16ToString(buf[:size]))
	}
	return p, nil
}
