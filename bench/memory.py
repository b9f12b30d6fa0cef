"""Memory of processes as the kernel accounts it (Linux /proc).

- RSS: resident pages mapped by the process, shared ones counted in full.
- PSS: each resident page divided by the number of processes that map it;
  the PSS of a group of processes sums to what the group really costs, so a
  file mapped by N workers is counted once in their summed PSS.
- USS: pages only this process maps (Private_Clean + Private_Dirty): what
  would be freed if it exited.

`usage(pid)` reads /proc/PID/smaps_rollup (Linux >= 4.14, falling back to
summing /proc/PID/smaps); `mapping_usage(pid, path)` gives the same figures
for the mappings of one file only (which part of an image is resident in a
process, and how much of it is shared). Other systems raise
`MemoryUnsupported` with a clear message.
"""

import os
import sys

KIB = 1024
MIB = 1024 * 1024

# smaps fields we sum (kB in the file; bytes in our results)
_FIELDS = ("Size", "Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem",
           "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty",
           "Anonymous", "Swap", "SwapPss")


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


def _check_supported(pid):
    reason = unsupported_reason()
    if reason is not None:
        raise MemoryUnsupported(reason)
    if not os.path.exists("/proc/%d" % pid):
        raise ProcessLookupError("no process %d (it exited?)" % pid)


def _empty():
    return {name: 0 for name in _FIELDS}


def _add_line(acc, line):
    # "Pss:                 400 kB"
    name, _, rest = line.partition(":")
    if name in acc:
        parts = rest.split()
        if parts:
            acc[name] += int(parts[0]) * KIB


def _finish(acc):
    acc["RSS"] = acc["Rss"]
    acc["PSS"] = acc["Pss"]
    acc["USS"] = acc["Private_Clean"] + acc["Private_Dirty"]
    return acc


def _is_mapping_header(line):
    # "7f12a4c00000-7f12a4e00000 r--s 00000000 fd:01 1234   /path"
    head = line.split(" ", 1)[0]
    return "-" in head and all(c in "0123456789abcdef-" for c in head)


def usage(pid=None):
    """Memory of process `pid` (default: this one) in bytes, as a dict with
    keys RSS, PSS, USS and the raw smaps fields (Rss, Pss, Pss_Anon,
    Pss_File, Shared_Clean, Private_Dirty, ...)."""
    pid = os.getpid() if pid is None else pid
    _check_supported(pid)
    acc = _empty()
    rollup = "/proc/%d/smaps_rollup" % pid
    try:
        with open(rollup) as f:
            for line in f:
                if not _is_mapping_header(line):
                    _add_line(acc, line)
        return _finish(acc)
    except FileNotFoundError:
        pass
    # kernels before 4.14: sum every mapping of /proc/PID/smaps
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                if not _is_mapping_header(line):
                    _add_line(acc, line)
    except FileNotFoundError:
        raise MemoryUnsupported(
            "neither /proc/%d/smaps_rollup nor /proc/%d/smaps exists" % (pid, pid))
    return _finish(acc)


def total_usage(pids):
    """`usage()` summed over `pids`."""
    acc = _empty()
    acc.update(RSS=0, PSS=0, USS=0)
    for pid in pids:
        one = usage(pid)
        for name in acc:
            acc[name] += one[name]
    return acc


def mapping_usage(pid, path):
    """Memory of the mappings of file `path` in process `pid`, in bytes.

    Mappings are matched by device and inode (not by name, so a file renamed
    into place after it was mapped is still found). Returns a dict with the
    summed smaps fields plus RSS/PSS/USS, `mappings` (how many mappings of
    that file the process has) and `file_size`.
    """
    pid = os.getpid() if pid is None else pid
    _check_supported(pid)
    st = os.stat(path)
    want_dev = (os.major(st.st_dev), os.minor(st.st_dev))
    want_ino = st.st_ino
    acc = _empty()
    count = 0
    inside = False
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if _is_mapping_header(line):
                parts = line.split()
                inside = False
                if len(parts) >= 5:
                    major, _, minor = parts[3].partition(":")
                    try:
                        dev = (int(major, 16), int(minor, 16))
                        ino = int(parts[4])
                    except ValueError:
                        continue
                    inside = ino == want_ino and dev == want_dev
                    count += inside
            elif inside:
                _add_line(acc, line)
    acc = _finish(acc)
    acc["mappings"] = count
    acc["file_size"] = st.st_size
    return acc


def total_mapping_usage(pids, path):
    """`mapping_usage()` summed over `pids`."""
    acc = None
    for pid in pids:
        one = mapping_usage(pid, path)
        if acc is None:
            acc = one
        else:
            for name, value in one.items():
                if name != "file_size":
                    acc[name] += value
    return acc


def fmt_mib(nbytes):
    """'123.4 MiB'"""
    return "%.1f MiB" % (nbytes / MIB)


if __name__ == "__main__":
    pid = int(sys.argv[1]) if len(sys.argv) > 1 else os.getpid()
    u = usage(pid)
    print("pid %d: RSS %s  PSS %s  USS %s" % (
        pid, fmt_mib(u["RSS"]), fmt_mib(u["PSS"]), fmt_mib(u["USS"])))
    for path in sys.argv[2:]:
        m = mapping_usage(pid, path)
        print("  %s: %d mapping(s), size %s, RSS %s, PSS %s, shared %s" % (
            path, m["mappings"], fmt_mib(m["Size"]), fmt_mib(m["RSS"]),
            fmt_mib(m["PSS"]), fmt_mib(m["Shared_Clean"] + m["Shared_Dirty"])))
