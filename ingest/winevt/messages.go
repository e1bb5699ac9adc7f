package winevt

import (
	"strconv"
	"strings"
)

// Messages in words. An EVTX file or `wevtutil qe /f:xml` holds an event's
// insertion strings, not its message: Event Viewer builds the message from
// the provider's message table (its EventMessageFile) and replaces the
// parameter message references "%%N" among the strings with message N of
// the provider's ParameterMessageFile. Without the provider's DLLs (replay
// on Linux, EVTX files copied off a node) klaxon renders what the bundled
// rules' events need itself:
//
//   - the "%%N" references of providers whose ParameterMessageFile is the
//     system's message table (kernel32.dll), i.e. Win32 error N, from
//     win32Messages; the Data field gets the text and <field>_insert keeps
//     the reference ("param2": "Insufficient system resources exist to
//     complete the requested service.", "param2_insert": "%%1450");
//   - the messages of the Service Control Manager's events (scmMessages).
//
// A rendered message (RenderingInfo, or EvtFormatMessage on the live
// source) always wins over klaxon's own rendering.

// systemParameterProviders are the providers whose "%%N" references are
// Win32 error messages (their ParameterMessageFile is
// %SystemRoot%\System32\kernel32.dll). Others (the Security auditing's
// msobjs.dll "%%1793", Group Policy's "%%4160") use tables of their own and
// are left as they are.
var systemParameterProviders = map[string]bool{
	"Service Control Manager": true,
}

// win32Messages are the messages of common Win32 error codes as
// FormatMessage(FORMAT_MESSAGE_FROM_SYSTEM) returns them in en-US: the
// texts of winerror.h (the MessageText of each ERROR_* code), without the
// trailing line break. Chosen for the services and resource errors Nomad
// clients log (1450 and 8 are the bundled rules' own).
var win32Messages = map[uint32]string{
	0:    "The operation completed successfully.",                                                                                 // ERROR_SUCCESS
	1:    "Incorrect function.",                                                                                                   // ERROR_INVALID_FUNCTION
	2:    "The system cannot find the file specified.",                                                                            // ERROR_FILE_NOT_FOUND
	3:    "The system cannot find the path specified.",                                                                            // ERROR_PATH_NOT_FOUND
	5:    "Access is denied.",                                                                                                     // ERROR_ACCESS_DENIED
	6:    "The handle is invalid.",                                                                                                // ERROR_INVALID_HANDLE
	8:    "Not enough memory resources are available to process this command.",                                                    // ERROR_NOT_ENOUGH_MEMORY
	14:   "Not enough memory resources are available to complete this operation.",                                                 // ERROR_OUTOFMEMORY
	21:   "The device is not ready.",                                                                                              // ERROR_NOT_READY
	32:   "The process cannot access the file because it is being used by another process.",                                       // ERROR_SHARING_VIOLATION
	50:   "The request is not supported.",                                                                                         // ERROR_NOT_SUPPORTED
	53:   "The network path was not found.",                                                                                       // ERROR_BAD_NETPATH
	87:   "The parameter is incorrect.",                                                                                           // ERROR_INVALID_PARAMETER
	112:  "There is not enough space on the disk.",                                                                                // ERROR_DISK_FULL
	121:  "The semaphore timeout period has expired.",                                                                             // ERROR_SEM_TIMEOUT
	258:  "The wait operation timed out.",                                                                                         // WAIT_TIMEOUT
	1053: "The service did not respond to the start or control request in a timely fashion.",                                      // ERROR_SERVICE_REQUEST_TIMEOUT
	1058: "The service cannot be started, either because it is disabled or because it has no enabled devices associated with it.", // ERROR_SERVICE_DISABLED
	1062: "The service has not been started.",                                                                                     // ERROR_SERVICE_NOT_ACTIVE
	1064: "An exception occurred in the service when handling the control request.",                                               // ERROR_EXCEPTION_IN_SERVICE
	1067: "The process terminated unexpectedly.",                                                                                  // ERROR_PROCESS_ABORTED
	1068: "The dependency service or group failed to start.",                                                                      // ERROR_SERVICE_DEPENDENCY_FAIL
	1069: "The service did not start due to a logon failure.",                                                                     // ERROR_SERVICE_LOGON_FAILED
	1075: "The dependency service does not exist or has been marked for deletion.",                                                // ERROR_SERVICE_DEPENDENCY_DELETED
	1326: "The user name or password is incorrect.",                                                                               // ERROR_LOGON_FAILURE
	1450: "Insufficient system resources exist to complete the requested service.",                                                // ERROR_NO_SYSTEM_RESOURCES
	1451: "Insufficient system resources exist to complete the requested service.",                                                // ERROR_NONPAGED_SYSTEM_RESOURCES
	1452: "Insufficient system resources exist to complete the requested service.",                                                // ERROR_PAGED_SYSTEM_RESOURCES
	1453: "Insufficient quota to complete the requested service.",                                                                 // ERROR_WORKING_SET_QUOTA
	1454: "Insufficient quota to complete the requested service.",                                                                 // ERROR_PAGEFILE_QUOTA
	1455: "The paging file is too small for this operation to complete.",                                                          // ERROR_COMMITMENT_LIMIT
	1460: "This operation returned because the timeout period expired.",                                                           // ERROR_TIMEOUT
	1722: "The RPC server is unavailable.",                                                                                        // RPC_S_SERVER_UNAVAILABLE
	1792: "An attempt was made to logon, but the network logon service was not started.",                                          // ERROR_NETLOGON_NOT_STARTED
	1816: "Not enough quota is available to process this command.",                                                                // ERROR_NOT_ENOUGH_QUOTA
}

// scmMessages are the messages of the Service Control Manager's events
// (its EventMessageFile, netevent.dll) as Event Viewer shows them in en-US,
// a line break (%n) as a space; %1, %2, … are the insertion strings.
var scmMessages = map[string]string{
	"7000": "The %1 service failed to start due to the following error: %2",
	"7001": "The %1 service depends on the %2 service which failed to start because of the following error: %3",
	"7009": "A timeout was reached (%1 milliseconds) while waiting for the %2 service to connect.",
	"7011": "A timeout (%1 milliseconds) was reached while waiting for a transaction response from the %2 service.",
	"7022": "The %1 service hung on starting.",
	"7023": "The %1 service terminated with the following error: %2",
	"7031": "The %1 service terminated unexpectedly.  It has done this %2 time(s).  The following corrective action will be taken in %3 milliseconds: %5.",
	"7034": "The %1 service terminated unexpectedly.  It has done this %2 time(s).",
	"7036": "The %1 service entered the %2 state.",
	"7040": "The start type of the %1 service was changed from %2 to %3.",
}

// win32Message returns the message of a "%%N" reference: Win32 error N,
// or, for an HRESULT of the Win32 facility (0x8007xxxx, as the Service
// Control Manager writes "%%2147942414" for E_OUTOFMEMORY), of its code, as
// FormatMessage does.
func win32Message(n uint64) (string, bool) {
	if n>>16 == 0x8007 {
		n &= 0xFFFF
	}
	if n > 0xFFFFFFFF {
		return "", false
	}
	m, ok := win32Messages[uint32(n)]
	return m, ok
}

// resolveInserts replaces each "%%N" in v whose Win32 message is known; ok
// reports whether any was.
func resolveInserts(v string) (string, bool) {
	if !strings.Contains(v, "%%") {
		return v, false
	}
	var b strings.Builder
	ok := false
	for i := 0; i < len(v); {
		if strings.HasPrefix(v[i:], "%%") {
			j := i + 2
			for j < len(v) && j-i < 12 && v[j] >= '0' && v[j] <= '9' {
				j++
			}
			if j > i+2 {
				if n, err := strconv.ParseUint(v[i+2:j], 10, 64); err == nil {
					if m, known := win32Message(n); known {
						b.WriteString(m)
						ok = true
						i = j
						continue
					}
				}
			}
		}
		b.WriteByte(v[i])
		i++
	}
	if !ok {
		return v, false
	}
	return b.String(), true
}

// formatMessage renders the message of a provider's event from its
// insertion strings; "" when klaxon does not know the event's message.
func formatMessage(provider, eid string, strs []string) string {
	if provider != "Service Control Manager" {
		return ""
	}
	tmpl, ok := scmMessages[eid]
	if !ok {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(tmpl); i++ {
		if tmpl[i] == '%' && i+1 < len(tmpl) && tmpl[i+1] >= '1' && tmpl[i+1] <= '9' {
			n := int(tmpl[i+1] - '0')
			if n <= len(strs) {
				b.WriteString(strings.TrimSpace(strs[n-1]))
			}
			i++
			continue
		}
		b.WriteByte(tmpl[i])
	}
	return b.String()
}
