/* Two Windows 10 system libraries that wine 8 (Debian 12) lacks and Rust's standard library
 * imports: bcryptprimitives.dll (ProcessPrng, random bytes) and api-ms-win-core-synch-l1-2-0.dll
 * (WaitOnAddress and WakeByAddress*, which wine has in kernelbase.dll; its .def file forwards them
 * there). scripts/setup-cross.sh builds both into the wine prefix the Windows check runs in; they
 * are never shipped: Windows 10 and later have the real ones. */
#include <windows.h>

/* advapi32's RtlGenRandom. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
  while (len > 0) {
    ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
    if (!SystemFunction036(data, chunk)) return FALSE;
    data += chunk;
    len -= chunk;
  }
  return TRUE;
}
