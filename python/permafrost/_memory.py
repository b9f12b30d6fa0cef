"""Seeing the sharing: what the OS charges each process, and which part of
that is the images it maps (``permafrost.memory_report()``, and
``python -m permafrost memory PID...``).

The figures, in bytes:

- RSS: resident pages a process maps, shared ones counted in full.
- PSS: each resident page divided by the number of processes that map it.
  Summed over a pool it is what the pool really costs: an image mapped by N
  workers is counted once.
- USS: pages only this process maps (what its exit would free).
- For an image in a process: its resident bytes, how many of them are
  shared with another process, how many are private, and its PSS.

Linux gives all of it, from ``/proc/PID/smaps``. An image is any mapping of
a regular file (or a shared-memory segment) that starts with the image
magic; a file replaced or removed since it was mapped (a versioned publish,
a segment whose owner closed it) is still found, through
``/proc/PID/map_files`` where the kernel lets us read it. Other systems give
each process's RSS and USS through psutil (``memory_full_info()``) where it
is installed, and no per-image figures; the report's ``notes`` say plainly
what could not be measured, rather than showing a zero.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from typing import Dict, List, Optional, Tuple

_MAGIC = b"\x89PFROST\n"
_KIB = 1024
_MIB = 1024 * 1024

# smaps fields we keep (kB in the file; bytes in our results)
_FIELDS = ("Size", "Rss", "Pss", "Shared_Clean", "Shared_Dirty",
           "Private_Clean", "Private_Dirty", "Swap")


@dataclasses.dataclass
class ImageMapping:
    """One image as mapped in one process."""

    name: str          # the file's path, or the segment's /dev/shm path
    size: int          # bytes mapped
    rss: int           # resident bytes
    pss: int           # this process's proportional share of them
    shared: int        # resident bytes another process maps too
    private: int       # resident bytes only this process maps
    deleted: bool      # replaced or removed since it was mapped


@dataclasses.dataclass
class ProcessMemory:
    """One process: its totals (None where the platform does not tell) and
    the images it maps (empty where they cannot be seen)."""

    pid: int
    rss: Optional[int]
    pss: Optional[int]
    uss: Optional[int]
    swap: Optional[int]
    images: List[ImageMapping]


@dataclasses.dataclass
class ImageMemory:
    """One image over all the processes of a report."""

    name: str
    size: int          # bytes mapped (the largest mapping of it)
    processes: int     # how many of the processes map it
    rss: int           # resident bytes, summed over the processes
    pss: int           # summed PSS: what the image costs them together
    shared: int        # summed resident bytes shared with another process
    private: int       # summed resident bytes private to one process
    deleted: bool


@dataclasses.dataclass
class MemoryReport:
    """What ``memory_report()`` returns; ``str()`` of it is a readable
    table, ``as_dict()`` a JSON-ready dict."""

    platform: str
    source: str        # where the figures come from
    processes: List[ProcessMemory]
    images: List[ImageMemory]
    notes: List[str]   # what could not be measured, and why

    def _total(self, field):
        values = [getattr(p, field) for p in self.processes]
        if not values or any(v is None for v in values):
            return None
        return sum(values)

    @property
    def total_rss(self) -> Optional[int]:
        return self._total("rss")

    @property
    def total_pss(self) -> Optional[int]:
        """Summed PSS of the processes (None where the OS gives no PSS)."""
        return self._total("pss")

    @property
    def total_uss(self) -> Optional[int]:
        return self._total("uss")

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(total_rss=self.total_rss, total_pss=self.total_pss,
                 total_uss=self.total_uss)
        return d

    def __str__(self) -> str:
        out = ["permafrost memory report: %d process(es), %s (%s)"
               % (len(self.processes), self.platform, self.source)]
        row = "%8s %11s %11s %11s %7s"
        out.append(row % ("pid", "RSS", "PSS", "USS", "images"))
        for p in self.processes:
            out.append(row % (p.pid, _mib(p.rss), _mib(p.pss), _mib(p.uss),
                              len(p.images)))
        if len(self.processes) > 1:
            out.append(row % ("total", _mib(self.total_rss), _mib(self.total_pss),
                              _mib(self.total_uss), ""))
        for im in self.images:
            out.append("image %s%s" % (im.name, " (deleted)" if im.deleted else ""))
            out.append("  %s mapped by %d process(es): resident %s summed, "
                       "PSS %s summed, shared %s, private %s"
                       % (_mib(im.size), im.processes, _mib(im.rss), _mib(im.pss),
                          _mib(im.shared), _mib(im.private)))
        for note in self.notes:
            out.append("note: " + note)
        return "\n".join(out)


def _mib(n):
    return "-" if n is None else "%.1f MiB" % (n / _MIB)


# ----------------------------------------------------------------- Linux


def _is_header(line):
    # "7f12a4c00000-7f12a4e00000 r--s 00000000 fd:01 1234   /path"
    head = line.split(" ", 1)[0]
    return "-" in head and all(c in "0123456789abcdef-" for c in head)


def _starts_with_magic(path):
    """True if `path` is a regular file that begins with the image magic;
    None if it cannot be read (gone, no permission)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            return f.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return None


class _Mapping:
    __slots__ = ("range", "dev", "ino", "path", "deleted", "fields")

    def __init__(self, header):
        parts = header.split(None, 5)
        self.range = parts[0]
        major, _, minor = parts[3].partition(":") if len(parts) > 3 else ("0", "", "0")
        try:
            self.dev = (int(major, 16), int(minor, 16))
            self.ino = int(parts[4]) if len(parts) > 4 else 0
        except ValueError:
            self.dev, self.ino = (0, 0), 0
        path = parts[5].rstrip("\n") if len(parts) > 5 else ""
        self.deleted = path.endswith(" (deleted)")
        self.path = path[: -len(" (deleted)")] if self.deleted else path
        self.fields = dict.fromkeys(_FIELDS, 0)


def read_smaps(pid):
    """The mappings of process `pid` from /proc/PID/smaps, each with its
    fields in bytes; raises OSError (FileNotFoundError if there is no such
    process, PermissionError if it is not ours to read)."""
    mappings = []
    current = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if _is_header(line):
                current = _Mapping(line)
                mappings.append(current)
            elif current is not None:
                name, _, rest = line.partition(":")
                if name in current.fields:
                    parts = rest.split()
                    if parts:
                        current.fields[name] += int(parts[0]) * _KIB
    return mappings


def _image_key(pid, m, cache, unchecked):
    """(dev, inode) of the file of mapping `m` if it is an image, else None."""
    if m.ino == 0 or not m.path.startswith("/"):
        return None
    key = (m.dev, m.ino)
    if key in cache:
        return key if cache[key] else None
    found = None
    if not m.deleted:
        try:
            st = os.stat(m.path)
            if st.st_ino == m.ino and (os.major(st.st_dev), os.minor(st.st_dev)) == m.dev:
                found = _starts_with_magic(m.path)
        except OSError:
            pass
    if found is None:  # replaced or removed since mapped: read it by mapping
        found = _starts_with_magic("/proc/%d/map_files/%s" % (pid, m.range))
    if found is None:
        unchecked.add(m.path)
        return None
    cache[key] = found
    return key if found else None


def _linux_process(pid, cache, unchecked):
    mappings = read_smaps(pid)
    totals = dict.fromkeys(_FIELDS, 0)
    images: Dict[Tuple, ImageMapping] = {}
    for m in mappings:
        f = m.fields
        for name in _FIELDS:
            totals[name] += f[name]
        key = _image_key(pid, m, cache, unchecked)
        if key is None:
            continue
        im = images.get(key)
        if im is None:
            im = images[key] = ImageMapping(m.path, 0, 0, 0, 0, 0, m.deleted)
        im.size += f["Size"]
        im.rss += f["Rss"]
        im.pss += f["Pss"]
        im.shared += f["Shared_Clean"] + f["Shared_Dirty"]
        im.private += f["Private_Clean"] + f["Private_Dirty"]
    proc = ProcessMemory(pid, totals["Rss"], totals["Pss"],
                         totals["Private_Clean"] + totals["Private_Dirty"],
                         totals["Swap"], list(images.values()))
    return proc, list(images)


def _linux_children(pids):
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                data = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = data[data.rfind(")") + 2:].split()
        if len(fields) > 1:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], list(pids)
    while todo:
        for child in sorted(parents.get(todo.pop(0), ())):
            if child not in out and child not in pids:
                out.append(child)
                todo.append(child)
    return out


# ----------------------------------------------------------------- elsewhere


def _psutil():
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _psutil_process(psutil, pid):
    info = psutil.Process(pid).memory_full_info()
    return ProcessMemory(pid, info.rss, getattr(info, "pss", None),
                         getattr(info, "uss", None), getattr(info, "swap", None), [])


# ----------------------------------------------------------------- report


def _linux():
    return sys.platform.startswith("linux") and os.path.exists("/proc/self/smaps")


def memory_report(pids=None, children=False) -> MemoryReport:
    """Memory of the processes `pids` (default: this one; with
    ``children=True`` their descendants too, such as the workers of a pool)
    and of the permafrost images they map.

    A pid that does not exist, or whose memory this user may not read, is
    left out with a note; so is any figure the platform cannot give.
    """
    if pids is None:
        pids = [os.getpid()]
    elif isinstance(pids, int):
        pids = [pids]
    pids = list(dict.fromkeys(int(p) for p in pids))
    notes: List[str] = []
    linux = _linux()
    psutil = None if linux else _psutil()
    if children:
        if linux:
            pids += _linux_children(pids)
        elif psutil is not None:
            for pid in list(pids):
                try:
                    kids = psutil.Process(pid).children(recursive=True)
                except psutil.Error:
                    continue
                pids += [k.pid for k in kids if k.pid not in pids]
        else:
            notes.append("children of a process cannot be listed here without psutil")

    processes: List[ProcessMemory] = []
    by_image: Dict[Tuple, ImageMemory] = {}
    if linux:
        source = "/proc/PID/smaps"
        cache: Dict[Tuple, bool] = {}
        unchecked: set = set()
        for pid in pids:
            try:
                proc, keys = _linux_process(pid, cache, unchecked)
            except FileNotFoundError:
                notes.append("no process %d (it exited?)" % pid)
                continue
            except PermissionError:
                notes.append("process %d: permission denied reading /proc/%d/smaps "
                             "(another user's process?)" % (pid, pid))
                continue
            except OSError as e:
                notes.append("process %d: cannot read its memory map: %s" % (pid, e))
                continue
            processes.append(proc)
            for key, im in zip(keys, proc.images):
                agg = by_image.get(key)
                if agg is None:
                    agg = by_image[key] = ImageMemory(im.name, 0, 0, 0, 0, 0, 0, im.deleted)
                agg.size = max(agg.size, im.size)
                agg.processes += 1
                agg.rss += im.rss
                agg.pss += im.pss
                agg.shared += im.shared
                agg.private += im.private
        if unchecked:
            notes.append("%d replaced or removed file(s) mapped in these processes "
                         "could not be read to tell whether they are images "
                         "(/proc/PID/map_files needs more privilege here): %s"
                         % (len(unchecked), ", ".join(sorted(unchecked)[:5])))
    else:
        notes.append("per-image figures (resident, shared and private bytes of "
                     "each image) need Linux's /proc/PID/smaps: not measured on %s"
                     % sys.platform)
        if psutil is None:
            source = "nothing"
            notes.append("psutil is not installed: process memory cannot be "
                         "measured on %s (pip install psutil)" % sys.platform)
            processes = [ProcessMemory(pid, None, None, None, None, []) for pid in pids]
        else:
            source = "psutil memory_full_info()"
            for pid in pids:
                try:
                    processes.append(_psutil_process(psutil, pid))
                except psutil.NoSuchProcess:
                    notes.append("no process %d (it exited?)" % pid)
                except psutil.Error as e:
                    notes.append("process %d: %s" % (pid, e))
            if any(p.pss is None for p in processes):
                notes.append("%s gives no PSS: the shared part of a process's "
                             "memory cannot be split among processes here; RSS counts "
                             "shared pages in full, USS leaves them out" % sys.platform)
    return MemoryReport(sys.platform, source, processes, list(by_image.values()), notes)
