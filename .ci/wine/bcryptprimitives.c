/*
 * bcryptprimitives.dll for Wine 8, which lacks it: Go >= 1.22 programs take
 * their random bytes from ProcessPrng and die at start without it. This one
 * exports ProcessPrng and fills the buffer from RtlGenRandom
 * (SystemFunction036 in advapi32). Built by .ci/wine/bridges with Debian's
 * gcc-mingw-w64-x86-64-win32 into the test prefix only; never shipped.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom */

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
	while (len > 0) {
		ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
		if (!SystemFunction036(data, n))
			return FALSE;
		data += n;
		len -= n;
	}
	return TRUE;
}
