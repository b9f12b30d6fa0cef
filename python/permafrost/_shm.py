"""Shared-memory images: ``share()``, the registry of segment owners, and
``cleanup()`` (docs/DESIGN.md, "Sharing and lifetimes"; docs/DECISIONS.md).

The process that calls ``share()`` owns the segment. It removes the name
when it closes the image, when the image dies, or at exit (``atexit``); a
child forked from it never does (the C layer compares process ids).

An owner killed without cleanup (``kill -9``) cannot remove its segments,
and POSIX keeps them until reboot. So every segment is written down in a
small registry (a text file, one ``name pid start-time`` line each, changed
only under an exclusive ``flock``) *before* it is created. ``cleanup()``,
which ``share()`` runs first, removes the segments of owners that are gone:
no such process, or a process with another start time (a reused pid).
Nothing scans ``/dev/shm``: macOS cannot list shared-memory names.

Windows needs no registry: a named mapping disappears with the last
process that holds it, the owner included.
"""

import atexit as _atexit
import os as _os
import sys as _sys
import threading as _threading
import weakref as _weakref

from . import _binding

_WINDOWS = _sys.platform == "win32"
_REGISTRY_FILE = "segments"
_LOCK_FILE = "segments.lock"

_owned = _weakref.WeakValueDictionary()  # name -> Image made here
# Reentrant: an owned Image that dies inside a registry operation (the
# cyclic GC runs at any allocation) calls _unregister, which must not wait
# for the flock this thread already holds.
_thread_lock = _threading.RLock()
_depth = _threading.local()
_atexit_done = False


def runtime_dir():
    """The folder of the registry: ``$PERMAFROST_RUNTIME_DIR``, else
    ``$XDG_RUNTIME_DIR/permafrost``, else ``<tmp>/permafrost-<uid>``. It is
    made private (0700) and must belong to this user."""
    d = _os.environ.get("PERMAFROST_RUNTIME_DIR")
    if not d:
        xdg = _os.environ.get("XDG_RUNTIME_DIR")
        if xdg and _os.path.isdir(xdg):
            d = _os.path.join(xdg, "permafrost")
        else:
            uid = _os.getuid() if hasattr(_os, "getuid") else 0
            import tempfile
            d = _os.path.join(tempfile.gettempdir(), "permafrost-%d" % uid)
    _os.makedirs(d, mode=0o700, exist_ok=True)
    if hasattr(_os, "getuid"):
        st = _os.stat(d)
        if st.st_uid != _os.getuid():
            raise _binding.SharedMemoryError(
                "the permafrost runtime folder %r belongs to another user" % d)
    return d


class _Registry:
    """The registry file, locked for the life of a ``with`` block."""

    def __enter__(self):
        import fcntl

        _thread_lock.acquire()
        self.nested = getattr(_depth, "n", 0) > 0
        _depth.n = getattr(_depth, "n", 0) + 1
        if self.nested:  # this thread holds the flock already
            self.dir = runtime_dir()
            return self
        try:
            self.dir = runtime_dir()
            self.lock_fd = _os.open(_os.path.join(self.dir, _LOCK_FILE),
                                    _os.O_RDWR | _os.O_CREAT, 0o600)
            try:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
            except BaseException:
                _os.close(self.lock_fd)
                raise
        except BaseException:
            _depth.n -= 1
            _thread_lock.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            if not self.nested:
                _os.close(self.lock_fd)  # releases the flock
        finally:
            _depth.n -= 1
            _thread_lock.release()

    def read(self):
        """[(name, pid, start)], skipping lines that do not parse."""
        entries = []
        try:
            with open(_os.path.join(self.dir, _REGISTRY_FILE), "r",
                      encoding="ascii", errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) != 3 or not parts[0].startswith("/pf-"):
                        continue
                    try:
                        entries.append((parts[0], int(parts[1]), int(parts[2])))
                    except ValueError:
                        continue
        except FileNotFoundError:
            pass
        return entries

    def write(self, entries):
        """Replaces the file atomically (a temporary file, renamed)."""
        path = _os.path.join(self.dir, _REGISTRY_FILE)
        tmp = "%s.tmp.%d" % (path, _os.getpid())
        with open(tmp, "w", encoding="ascii") as f:
            for name, pid, start in entries:
                f.write("%s %d %d\n" % (name, pid, start))
        _os.replace(tmp, path)


def _owner_alive(pid, start):
    now = _binding._process_start(pid)
    return now is not None and (start == 0 or now == 0 or now == start)


def cleanup():
    """Remove the shared-memory segments whose owner process is gone
    (killed, crashed). Returns the names removed. ``share()`` runs it first;
    call it yourself after a crash if you do not share again."""
    if _WINDOWS:
        return []
    removed = []
    with _Registry() as reg:
        keep = []
        for name, pid, start in reg.read():
            if _owner_alive(pid, start):
                keep.append((name, pid, start))
            elif _binding._shm_unlink(name):
                removed.append(name)
        reg.write(keep)
    return removed


def _register(name):
    if _WINDOWS:
        return
    pid = _os.getpid()
    start = _binding._process_start(pid) or 0
    with _Registry() as reg:
        entries = reg.read()
        entries.append((name, pid, start))
        reg.write(entries)


def _unregister(name):
    """The hook the C layer calls once the owner removed a segment."""
    if _WINDOWS:
        return
    with _Registry() as reg:
        entries = reg.read()
        kept = [e for e in entries if e[0] != name]
        if len(kept) != len(entries):
            reg.write(kept)


def _close_owned():
    """At exit: the owner removes the segments it made (views alive in
    other processes keep reading their mappings)."""
    for image in list(_owned.values()):
        image.close()


def _new_name():
    # "/pf-" + pid (hex, <= 8) + "-" + 16 random hex digits: at most 29
    # characters, within macOS's 31.
    return "/pf-%x-%s" % (_os.getpid() & 0xFFFFFFFF, _os.urandom(8).hex())


def share_image(obj, options=0):
    """Freeze ``obj`` into a new shared-memory segment; its ``Image``,
    owned by this process. ``options``: freeze's, as a bit mask (1: allow
    pickles, 2: ordered)."""
    global _atexit_done
    cleanup()
    name = _new_name()
    _register(name)  # first: a kill right after creating cannot leak it
    try:
        image = _binding._share(obj, name, int(options))
    except BaseException:
        _unregister(name)
        raise
    _owned[name] = image
    if not _atexit_done:
        _atexit.register(_close_owned)
        _atexit_done = True
    return image


_binding._set_shm_hook(_unregister)
