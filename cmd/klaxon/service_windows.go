//go:build windows

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/klaxon-dev/klaxon/cmd/internal/app"
)

const (
	// serviceStopTimeout bounds a service stop: the role's own shutdown
	// timeout (default 15s) plus a margin.
	serviceStopTimeout = 45 * time.Second
	// serviceStateTimeout bounds `klaxon service start|stop` waiting for
	// the service to reach the state.
	serviceStateTimeout = 60 * time.Second
	// Event Log ids of the service's lifecycle messages.
	eventStarted, eventStopped, eventFailed = 1, 2, 3
)

// cmdService manages the Windows service.
func cmdService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseServiceArgs(args, stderr)
	if err != nil {
		return err
	}
	switch o.action {
	case "install":
		return serviceInstall(o, stdout)
	case "uninstall":
		return serviceUninstall(o, stdout)
	case "start":
		return serviceStart(o, stdout)
	case "stop":
		return serviceStop(o, stdout)
	}
	return serviceRun(ctx, o, stdout, stderr)
}

// serviceArgs: a process started by the service control manager with a
// role command line (say, installed by hand with `sc create ... binPath=
// "klaxon.exe run --config ..."`) runs that role as the service.
func serviceArgs(args []string) []string {
	if len(args) > 0 && args[0] == "service" {
		return args
	}
	if ok, err := svc.IsWindowsService(); err != nil || !ok {
		return args
	}
	return append([]string{"service", "run", "--name", "klaxon"}, args...)
}

func connectSCM(o *serviceOptions) (*mgr.Mgr, error) {
	m, err := mgr.Connect()
	if err != nil {
		return nil, fmt.Errorf("service %s: connect to the service control manager (an elevated prompt is needed): %w", o.action, err)
	}
	return m, nil
}

func serviceInstall(o *serviceOptions, stdout io.Writer) error {
	if _, err := app.LoadConfig(o.config); err != nil {
		return fmt.Errorf("service install: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("service install: path of klaxon.exe: %w", err)
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return fmt.Errorf("service install: path of klaxon.exe: %w", err)
	}
	if o.logFile == "" {
		o.logFile = defaultServiceLog(o.name)
	}
	m, err := connectSCM(o)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	if s, err := m.OpenService(o.name); err == nil {
		s.Close()
		return fmt.Errorf("service install: service %q exists already (klaxon service uninstall --name %s)", o.name, o.name)
	}
	s, err := m.CreateService(o.name, exe, mgr.Config{
		DisplayName:      "klaxon (" + o.role + ")",
		Description:      "klaxon turns Nomad agent logs, the Nomad event stream and Windows Event Logs into incidents.",
		StartType:        mgr.StartAutomatic,
		DelayedAutoStart: true,
		ErrorControl:     mgr.ErrorNormal,
	}, o.commandLine()...)
	if err != nil {
		return fmt.Errorf("service install: %s: %w", o.name, err)
	}
	defer s.Close()
	// Restart after a crash or a failed exit: 5 s, 30 s, then every minute;
	// the failure count resets after a day.
	if err := s.SetRecoveryActions([]mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 30 * time.Second},
		{Type: mgr.ServiceRestart, Delay: time.Minute},
	}, 24*60*60); err != nil {
		_ = s.Delete()
		return fmt.Errorf("service install: %s: recovery actions: %w", o.name, err)
	}
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		_ = s.Delete()
		return fmt.Errorf("service install: %s: recovery actions: %w", o.name, err)
	}
	if err := eventlog.InstallAsEventCreate(o.name, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil &&
		!strings.Contains(err.Error(), "exists") {
		_ = s.Delete()
		return fmt.Errorf("service install: %s: Event Log source: %w", o.name, err)
	}
	fmt.Fprintf(stdout, "installed service %s: %s %s\nlog: %s\nstart it with: klaxon service start --name %s\n",
		o.name, exe, strings.Join(o.commandLine(), " "), o.logFile, o.name)
	return nil
}

func serviceUninstall(o *serviceOptions, stdout io.Writer) error {
	m, s, err := openService(o, "uninstall")
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if st, err := s.Query(); err == nil && st.State != svc.Stopped {
		if err := stopAndWait(s, o.name); err != nil {
			return fmt.Errorf("service uninstall: %w", err)
		}
	}
	if err := s.Delete(); err != nil {
		return fmt.Errorf("service uninstall: %s: %w", o.name, err)
	}
	if err := eventlog.Remove(o.name); err != nil {
		fmt.Fprintf(stdout, "Event Log source %s not removed: %v\n", o.name, err)
	}
	fmt.Fprintf(stdout, "removed service %s\n", o.name)
	return nil
}

func serviceStart(o *serviceOptions, stdout io.Writer) error {
	m, s, err := openService(o, "start")
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if err := s.Start(); err != nil {
		return fmt.Errorf("service start: %s: %w", o.name, err)
	}
	st, err := waitState(s, svc.Running)
	if err != nil {
		return fmt.Errorf("service start: %s: %w (see its log and the Application Event Log)", o.name, err)
	}
	fmt.Fprintf(stdout, "service %s running (pid %d)\n", o.name, st.ProcessId)
	return nil
}

func serviceStop(o *serviceOptions, stdout io.Writer) error {
	m, s, err := openService(o, "stop")
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if err := stopAndWait(s, o.name); err != nil {
		return fmt.Errorf("service stop: %w", err)
	}
	fmt.Fprintf(stdout, "service %s stopped\n", o.name)
	return nil
}

// openService connects to the service control manager and opens the
// service of o for the command verb.
func openService(o *serviceOptions, verb string) (*mgr.Mgr, *mgr.Service, error) {
	m, err := connectSCM(o)
	if err != nil {
		return nil, nil, err
	}
	s, err := m.OpenService(o.name)
	if err != nil {
		m.Disconnect()
		return nil, nil, fmt.Errorf("service %s: service %q: %w", verb, o.name, err)
	}
	return m, s, nil
}

func stopAndWait(s *mgr.Service, name string) error {
	if _, err := s.Control(svc.Stop); err != nil && !errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
		return fmt.Errorf("%s: %w", name, err)
	}
	if _, err := waitState(s, svc.Stopped); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// waitState polls the service until it reaches want, stops on its way to
// Running, or serviceStateTimeout passes.
func waitState(s *mgr.Service, want svc.State) (svc.Status, error) {
	deadline := time.Now().Add(serviceStateTimeout)
	for {
		st, err := s.Query()
		if err != nil {
			return st, err
		}
		if st.State == want {
			return st, nil
		}
		if want == svc.Running && st.State == svc.Stopped {
			return st, fmt.Errorf("stopped right after starting (exit code %d, service-specific %d)", st.Win32ExitCode, st.ServiceSpecificExitCode)
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("not %s after %s (state %d)", stateName(want), serviceStateTimeout, st.State)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func stateName(s svc.State) string {
	switch s {
	case svc.Running:
		return "running"
	case svc.Stopped:
		return "stopped"
	}
	return fmt.Sprint(uint32(s))
}

// defaultServiceLog is %ProgramData%\klaxon\NAME.log.
func defaultServiceLog(name string) string {
	base := os.Getenv("ProgramData")
	if base == "" {
		base = `C:\ProgramData`
	}
	return filepath.Join(base, "klaxon", name+".log")
}

// serviceRun is what the service control manager starts. Run by hand (not
// under the service control manager) it runs the role in the foreground.
func serviceRun(ctx context.Context, o *serviceOptions, stdout, stderr io.Writer) error {
	isService, err := svc.IsWindowsService()
	if err != nil {
		return fmt.Errorf("service run: %w", err)
	}
	if !isService {
		return run(ctx, o.roleArgs, stdout, stderr)
	}
	if o.logFile == "" {
		o.logFile = defaultServiceLog(o.name)
	}
	if err := os.MkdirAll(filepath.Dir(o.logFile), 0o755); err != nil {
		return fmt.Errorf("service run: log directory: %w", err)
	}
	logf, err := os.OpenFile(o.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("service run: log file: %w", err)
	}
	defer logf.Close()
	h := &serviceHandler{o: o, out: logf}
	if el, err := eventlog.Open(o.name); err == nil {
		h.elog = el
		defer el.Close()
	}
	if err := svc.Run(o.name, h); err != nil {
		fmt.Fprintf(logf, "klaxon: service %s: %v\n", o.name, err)
		return fmt.Errorf("service run: %w", err)
	}
	return nil
}

// serviceHandler adapts serveService to the service control manager.
type serviceHandler struct {
	o    *serviceOptions
	out  io.Writer // stdout and stderr of the role
	elog *eventlog.Log
}

// Execute implements svc.Handler.
func (h *serviceHandler) Execute(_ []string, reqs <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	cmds := make(chan serviceCmd)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case r := <-reqs:
				var c serviceCmd
				switch r.Cmd {
				case svc.Interrogate:
					c = svcInterrogate
				case svc.Stop:
					c = svcStop
				case svc.Shutdown:
					c = svcShutdown
				default:
					continue
				}
				select {
				case cmds <- c:
				case <-stop:
					return
				}
			}
		}
	}()
	var checkpoint uint32
	report := func(s serviceState) {
		st := svc.Status{}
		switch s {
		case stateStartPending:
			st = svc.Status{State: svc.StartPending, WaitHint: 30000}
		case stateRunning:
			st = svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
		case stateStopPending:
			checkpoint++
			st = svc.Status{State: svc.StopPending, CheckPoint: checkpoint, WaitHint: uint32(serviceStopTimeout / time.Millisecond)}
		}
		status <- st
	}
	h.event(eventStarted, false, fmt.Sprintf("klaxon %s started: %s", version, strings.Join(h.o.roleArgs, " ")))
	err := serveService(func(ctx context.Context) error {
		return run(ctx, h.o.roleArgs, h.out, h.out)
	}, cmds, report, serviceStopTimeout)
	if err != nil {
		fmt.Fprintf(h.out, "klaxon: %v\n", err)
		h.event(eventFailed, true, fmt.Sprintf("klaxon stopped with an error: %v", err))
		return true, 1
	}
	h.event(eventStopped, false, "klaxon stopped")
	return false, 0
}

func (h *serviceHandler) event(id uint32, isErr bool, msg string) {
	if h.elog == nil {
		return
	}
	if isErr {
		_ = h.elog.Error(id, msg)
	} else {
		_ = h.elog.Info(id, msg)
	}
}
