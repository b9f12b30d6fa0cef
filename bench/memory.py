"""Memory of processes as the kernel accounts it, for the benchmarks and the
demo: sums of /proc/PID/smaps fields, read through the package's own reader
(permafrost._memory, which also gives `permafrost.memory_report()`).

- RSS: resident pages mapped by the process, shared ones counted in full.
- PSS: each resident page divided by the number of processes that map it;
  the PSS of a group of processes sums to what the group really costs.
- USS: pages only this process maps (Private_Clean + Private_Dirty).

`usage(pid)` sums every mapping; `mapping_usage(pid, path)` only the
mappings of one file (matched by device and inode, so a file renamed into
place after it was mapped is still found). Other systems raise
`MemoryUnsupported` with a clear message.
"""

import os
import sys

from permafrost._memory import read_smaps

MIB = 1024 * 1024


class MemoryUnsupported(RuntimeError):
    """Per-process PSS/USS cannot be read on this system."""


def unsupported_reason():
    """None where per-process PSS can be read here, else why not."""
    if not sys.platform.startswith("linux"):
        return ("PSS/USS measurement needs Linux /proc/PID/smaps "
                "(this is %s); the memory figures cannot be taken here" % sys.platform)
    if not os.path.exists("/proc/self/smaps"):
        return "/proc/self/smaps is missing (is /proc mounted?)"
    return None


def _sum(mappings):
    acc = {"mappings": 0, "Size": 0, "Rss": 0, "Pss": 0, "Shared_Clean": 0,
           "Shared_Dirty": 0, "Private_Clean": 0, "Private_Dirty": 0, "Swap": 0}
    for m in mappings:
        acc["mappings"] += 1
        for name, value in m.fields.items():
            acc[name] += value
    acc["RSS"] = acc["Rss"]
    acc["PSS"] = acc["Pss"]
    acc["USS"] = acc["Private_Clean"] + acc["Private_Dirty"]
    return acc


def _smaps(pid):
    reason = unsupported_reason()
    if reason is not None:
        raise MemoryUnsupported(reason)
    try:
        return read_smaps(os.getpid() if pid is None else pid)
    except FileNotFoundError:
        raise ProcessLookupError("no process %d (it exited?)" % pid) from None


def usage(pid=None):
    """Memory of process `pid` (default: this one) in bytes: a dict with
    RSS, PSS, USS and the summed smaps fields (Rss, Pss, Shared_Clean...)."""
    return _sum(_smaps(pid))


def total_usage(pids):
    """`usage()` summed over `pids`."""
    return _sum(m for pid in pids for m in _smaps(pid))


def mapping_usage(pid, path):
    """`usage()` of the mappings of file `path` only, plus `mappings` (how
    many the process has) and `file_size`."""
    return total_mapping_usage([pid], path)


def total_mapping_usage(pids, path):
    """`mapping_usage()` summed over `pids`."""
    st = os.stat(path)
    want = ((os.major(st.st_dev), os.minor(st.st_dev)), st.st_ino)
    acc = _sum(m for pid in pids for m in _smaps(pid) if (m.dev, m.ino) == want)
    acc["file_size"] = st.st_size
    return acc


def fmt_mib(nbytes):
    """'123.4 MiB'"""
    return "%.1f MiB" % (nbytes / MIB)
