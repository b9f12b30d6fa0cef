"""The alternatives a user would pick to share a read-only str-keyed table
with a pool, each behind the same small interface, for bench/peers.py.

A contender builds its store from the table once (in the parent), and gives
a picklable `spec` from which any process opens a reader:

    build(table, folder) -> spec          (timed; the store's size follows)
    open_reader(spec)    -> reader        (in a worker: the attach)
    reader.get(key)      -> value or None (a lookup, the value decoded)
    reader.items()       -> (key, value) pairs, every entry once
    size(spec)           -> bytes on disk or in shared memory (None: n/a)
    close(spec)          -> removes what build made outside `folder`

Values are the table's own: str, int or (int, float, str). Stores that
hold bytes keep them pickled (protocol 5), which is what a user of those
stores does. Modules are imported in the functions, so that a missing
package skips one contender with a note instead of the whole run.

Optional parts, with defaults on Contender:

    runner               "spawn" (fresh processes), "fork" (forked from a
                         process that holds the table) or "ray" (Ray actors)
    start(tmp)           untimed set-up before the first build (Ray: init)
    prefix_query(reader, p) -> the keys starting with p (if `prefix`)
    tree                 whether the nested "hash tree" data set is run
    skip_memory          why the memory figures are not taken (or None)
"""

import bisect
import itertools
import os
import pickle

PROTO = 5

# spec -> the table a process holds for its forked workers (ForkCow).
HELD = {}


class Contender:
    name = "?"
    note = ""
    runner = "spawn"
    prefix = False
    tree = True
    tree_note = ""
    skip_memory = None

    def available(self):
        """None if it can run here, else why not."""
        return None

    def start(self, tmp):
        """Untimed set-up before the first build."""

    def prefix_query(self, reader, prefix):
        raise NotImplementedError

    def size(self, spec):
        """Bytes the store's file takes on disk (allocated blocks: LMDB's
        file is sparse up to its map size)."""
        if not isinstance(spec, str):
            return None
        st = os.stat(spec)
        return st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size

    def close(self, spec):
        pass


# ----------------------------------------------------------------- in memory


class PickleCopy(Contender):
    name = "pickle copy per worker"
    note = "each worker pickle.load()s its own dict"

    def build(self, table, folder):
        path = os.path.join(folder, "table.pickle")
        with open(path, "wb") as f:
            pickle.dump(table, f, protocol=PROTO)
        return path

    def open_reader(self, spec):
        with open(spec, "rb") as f:
            return pickle.load(f)


class PermafrostFile(Contender):
    name = "permafrost (file)"
    note = "freeze() once; workers open() the image: one mapped copy"

    def build(self, table, folder):
        import permafrost
        path = os.path.join(folder, "table.pf")
        permafrost.freeze(table, path)
        return path

    def open_reader(self, spec):
        import permafrost
        return permafrost.open(spec)


class PermafrostShare(Contender):
    name = "permafrost (share)"
    note = "share() once, no file; workers unpickle a view (about 120 bytes)"

    def __init__(self):
        self._owned = {}

    def build(self, table, folder):
        import permafrost
        root = permafrost.share(table)
        blob = pickle.dumps(root, protocol=PROTO)
        self._owned[blob] = root  # the owner keeps the segment alive
        return blob

    def open_reader(self, spec):
        return pickle.loads(spec)

    def size(self, spec):
        import permafrost
        return permafrost.image_of(self._owned[spec]).size

    def close(self, spec):
        import permafrost
        root = self._owned.pop(spec, None)
        if root is not None:
            permafrost.image_of(root).close()


class PermafrostOrdered(PermafrostFile):
    name = "permafrost (file, ordered)"
    note = ("freeze(ordered=True): the records in sorted key order plus an order index, "
            "for prefix queries (docs/ORDERED.md)")
    prefix = True
    tree = False
    tree_note = "the same as permafrost (file) for 2-level lookups"

    def build(self, table, folder):
        import permafrost
        path = os.path.join(folder, "table-ordered.pf")
        permafrost.freeze(table, path, ordered=True)
        return path

    def prefix_query(self, reader, prefix):
        return list(reader.keys(prefix=prefix))


class ManagerDict(Contender):
    name = "multiprocessing.Manager dict"
    note = "one copy in the manager process; every lookup is a round trip"
    slow = True
    skip_memory = "touching every entry through the proxy is one round trip per entry"
    tree = False
    tree_note = "not run: the same round trip per access as on the flat table"

    def __init__(self):
        self._managers = []

    def build(self, table, folder):
        import multiprocessing
        manager = multiprocessing.get_context("spawn").Manager()
        self._managers.append(manager)
        # The proxy pickles by token; a spawned child inherits this
        # process's authkey, so it can talk to the manager.
        return manager.dict(table)

    def open_reader(self, spec):
        return spec

    def size(self, spec):
        return None

    def close(self, spec):
        while self._managers:
            self._managers.pop().shutdown()


# ----------------------------------------------------------------- on disk


class _BytesReader:
    """get/items over a store of pickled values."""

    def get(self, key):
        raw = self._get(key)
        return None if raw is None else pickle.loads(raw)


class Sqlite(Contender):
    name = "SQLite (read-only, immutable, mmap)"
    note = "k TEXT PRIMARY KEY, v BLOB (pickled), WITHOUT ROWID"

    def build(self, table, folder):
        import sqlite3
        path = os.path.join(folder, "table.sqlite")
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
        con.executemany("INSERT INTO kv VALUES (?, ?)",
                        ((k, pickle.dumps(v, protocol=PROTO)) for k, v in table.items()))
        con.commit()
        con.close()
        return path

    def open_reader(self, spec):
        return _SqliteReader(spec)

    prefix = True

    def prefix_query(self, reader, prefix):
        """A range on the primary key: k >= p AND k < p with its last
        character incremented (BINARY collation: code point order)."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = reader.cur.execute("SELECT k FROM kv WHERE k >= ? AND k < ?", (prefix, upper))
        return [r[0] for r in rows]


class _SqliteReader(_BytesReader):
    def __init__(self, path):
        import sqlite3
        self.con = sqlite3.connect("file:%s?mode=ro&immutable=1" % path, uri=True)
        self.con.execute("PRAGMA mmap_size=%d" % (1 << 40))
        self.cur = self.con.cursor()

    def _get(self, key):
        row = self.cur.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def items(self):
        for k, v in self.con.execute("SELECT k, v FROM kv"):
            yield k, pickle.loads(v)


class Dbm(Contender):
    name = "dbm"
    note = "pickled values"

    def __init__(self):
        self.module = None
        for name in ("dbm.gnu", "dbm.ndbm", "dbm.dumb"):
            try:
                self.module = __import__(name, fromlist=["open"])
                break
            except ImportError:
                continue
        self.name = "dbm (%s)" % self.module.__name__ if self.module else "dbm"
        if self.module and self.module.__name__ == "dbm.dumb":
            self.note = ("pickled values; this Python has neither dbm.gnu nor dbm.ndbm, so "
                         "dbm.dumb: every reader loads the whole key index into memory")

    def available(self):
        return None if self.module else "no dbm module at all in this Python"

    def build(self, table, folder):
        path = os.path.join(folder, "table.dbm")
        db = self.module.open(path, "n")
        try:
            for k, v in table.items():
                db[k.encode("utf-8", "surrogatepass")] = pickle.dumps(v, protocol=PROTO)
        finally:
            db.close()
        return path

    def open_reader(self, spec):
        return _DbmReader(self.module, spec)

    def size(self, spec):
        files = [f for f in os.listdir(os.path.dirname(spec))
                 if f.startswith(os.path.basename(spec))]
        return sum(os.stat(os.path.join(os.path.dirname(spec), f)).st_blocks * 512
                   for f in files)


class _DbmReader(_BytesReader):
    def __init__(self, module, path):
        self.db = module.open(path, "r")

    def _get(self, key):
        return self.db.get(key.encode("utf-8", "surrogatepass"))

    def items(self):
        for k in self.db.keys():
            yield k.decode("utf-8", "surrogatepass"), pickle.loads(self.db[k])


class Lmdb(Contender):
    name = "LMDB"
    note = "read-only environment, pickled values"

    def available(self):
        try:
            import lmdb  # noqa: F401
        except ImportError:
            return "the lmdb package is not installed (pip install lmdb)"
        return None

    def build(self, table, folder):
        import lmdb
        path = os.path.join(folder, "table.lmdb")
        env = lmdb.open(path, map_size=1 << 36, subdir=False, sync=False, writemap=True,
                        lock=False, metasync=False)
        with env.begin(write=True) as txn:
            for k, v in table.items():
                txn.put(k.encode("utf-8", "surrogatepass"), pickle.dumps(v, protocol=PROTO))
        env.sync(True)
        env.close()
        return path

    def open_reader(self, spec):
        return _LmdbReader(spec)

    prefix = True

    def prefix_query(self, reader, prefix):
        """A cursor positioned with set_range, read while the keys match."""
        want = prefix.encode("utf-8", "surrogatepass")
        out = []
        cur = reader.txn.cursor()
        if cur.set_range(want):
            for k in cur.iternext(keys=True, values=False):
                if not k.startswith(want):
                    break
                out.append(k.decode("utf-8", "surrogatepass"))
        return out


class _LmdbReader(_BytesReader):
    def __init__(self, path):
        import lmdb
        self.env = lmdb.open(path, subdir=False, readonly=True, lock=False)
        self.txn = self.env.begin(buffers=False)

    def _get(self, key):
        return self.txn.get(key.encode("utf-8", "surrogatepass"))

    def items(self):
        for k, v in self.txn.cursor():
            yield k.decode("utf-8", "surrogatepass"), pickle.loads(v)


class Marisa(Contender):
    name = "marisa-trie (BytesTrie, mmap)"
    note = "str keys only; values pickled"

    def available(self):
        try:
            import marisa_trie  # noqa: F401
        except ImportError:
            return "the marisa-trie package is not installed (pip install marisa-trie)"
        return None

    def build(self, table, folder):
        import marisa_trie
        path = os.path.join(folder, "table.marisa")
        trie = marisa_trie.BytesTrie((k, pickle.dumps(v, protocol=PROTO)) for k, v in table.items())
        trie.save(path)
        return path

    def open_reader(self, spec):
        return _MarisaReader(spec)

    prefix = True

    def prefix_query(self, reader, prefix):
        return reader.trie.keys(prefix)


class _MarisaReader(_BytesReader):
    def __init__(self, path):
        import marisa_trie
        self.trie = marisa_trie.BytesTrie()
        self.trie.mmap(path)

    def _get(self, key):
        found = self.trie.get(key)
        return found[0] if found else None

    def items(self):
        for k, v in self.trie.iteritems():
            yield k, pickle.loads(v)


# ----------------------------------------------------------------- fork


class ForkCow(Contender):
    """The parent holds the dict and forks its workers: they see it through
    copy-on-write pages. In this benchmark the parent is a process of its
    own that loads the table and forks on request (peerjobs.fork_holder),
    so that its heap is the table and an interpreter, nothing more."""
    name = "fork copy-on-write"
    note = ("the parent holds the dict, workers are forked and read it through "
            "copy-on-write pages; refcount and GC writes copy the pages they touch; "
            "POSIX only (no fork on Windows; on macOS fork without exec is unsafe "
            "with many system libraries)")
    runner = "fork"
    gc_freeze = False

    def available(self):
        return None if hasattr(os, "fork") else "os.fork is not available here"

    def build(self, table, folder):
        """Nothing to build: the table is the store."""
        HELD[folder] = table
        return folder

    def open_reader(self, spec):
        return HELD[spec]

    def size(self, spec):
        return None

    def close(self, spec):
        HELD.pop(spec, None)


class ForkCowFrozen(ForkCow):
    name = "fork copy-on-write + gc.freeze()"
    note = ("as fork copy-on-write, with gc.disable() before the table is loaded, "
            "gc.freeze() before each fork and gc.enable() in the child (the recipe of "
            "the gc docs): the child's collections no longer write to the table's objects")
    gc_freeze = True


# ----------------------------------------------------------------- shared memory


class UltraDictShared(Contender):
    name = "UltraDict (shared memory)"
    note = ("UltraDict(table, name=...) once, then dump(); a worker attaches by name and "
            "unpickles the full dump into a dict of its own (a copy per worker); every "
            "access first checks the shared update stream")

    _counter = itertools.count()

    def __init__(self):
        self._owned = {}

    def available(self):
        try:
            import UltraDict  # noqa: F401
        except ImportError:
            return "the UltraDict package is not installed (pip install UltraDict)"
        return None

    def build(self, table, folder):
        from UltraDict import UltraDict
        name = "pfbench%d_%d" % (os.getpid(), next(self._counter))
        shared = UltraDict(table, name=name, create=True, buffer_size=1 << 20,
                           auto_unlink=False)
        shared.dump()  # a reader loads one full dump instead of replaying the stream
        self._owned[name] = shared
        return name

    def open_reader(self, spec):
        from UltraDict import UltraDict
        return UltraDict(name=spec, create=False)

    def size(self, spec):
        shared = self._owned[spec]
        return shared.full_dump_memory.size + shared.buffer_size + shared.control.size

    def close(self, spec):
        shared = self._owned.pop(spec, None)
        if shared is not None:
            shared.unlink()


# ----------------------------------------------------------------- Arrow


_STR, _INT, _TUPLE = 0, 1, 2


class ArrowIpc(Contender):
    """The table as typed columns in an Arrow IPC file, rows sorted by key:
    k (string), kind (int8: str / int / tuple), i (int64), f (float64),
    s (string); a value is rebuilt from its row. Readers memory-map it."""
    name = "pyarrow IPC, mmap + dict key->row per worker"
    note = ("one record batch of typed columns (k, kind, i, f, s) written with "
            "pa.ipc.new_file; a worker maps it (pa.memory_map, pa.ipc.open_file) and "
            "builds a Python dict key -> row from the key column (pyarrow has no hash "
            "lookup over a mapped table): that dict is a private copy of the keys, "
            "counted in attach and PSS; numeric columns are read through zero-copy "
            "numpy views, strings with Array[i].as_py()")
    indexed = True
    tree = False
    tree_note = ("not run: a flat table of columns; the nested tree would need a "
                 "list<struct> column and a second index")

    def available(self):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return "the pyarrow package is not installed (pip install pyarrow)"
        return None

    def build(self, table, folder):
        import pyarrow as pa
        path = os.path.join(folder, "table.arrow")
        keys = sorted(table)
        kinds, ints, floats, strs = [], [], [], []
        for k in keys:
            v = table[k]
            t = type(v)
            if t is str:
                kinds.append(_STR), ints.append(0), floats.append(0.0), strs.append(v)
            elif t is int:
                kinds.append(_INT), ints.append(v), floats.append(0.0), strs.append("")
            elif t is tuple and len(v) == 3:
                kinds.append(_TUPLE), ints.append(v[0]), floats.append(v[1]), strs.append(v[2])
            else:
                raise TypeError("ArrowIpc: unexpected value %r" % (v,))
        batch = pa.record_batch([
            pa.array(keys, pa.string()), pa.array(kinds, pa.int8()),
            pa.array(ints, pa.int64()), pa.array(floats, pa.float64()),
            pa.array(strs, pa.string())], names=["k", "kind", "i", "f", "s"])
        with pa.OSFile(path, "wb") as sink:
            with pa.ipc.new_file(sink, batch.schema) as writer:
                writer.write_batch(batch)
        return path

    def open_reader(self, spec):
        return _ArrowReader(spec, self.indexed)


class ArrowIpcSorted(ArrowIpc):
    name = "pyarrow IPC, mmap + binary search"
    note = ("the same file; a lookup binary-searches the sorted key column "
            "(bisect over Array[i].as_py(), about log2(n) probes): no per-worker index; "
            "pyarrow.compute.index would scan the whole column per lookup")
    indexed = False
    prefix = True

    def prefix_query(self, reader, prefix):
        return reader.prefix_keys(prefix)


class _ArrowKeys:
    """The key column as a sequence of str, for bisect."""

    def __init__(self, array):
        self.array = array

    def __len__(self):
        return len(self.array)

    def __getitem__(self, i):
        return self.array[i].as_py()


class _ArrowReader:
    CHUNK = 4096

    def __init__(self, path, indexed):
        import pyarrow as pa
        self.source = pa.memory_map(path, "r")
        batch = pa.ipc.open_file(self.source).get_batch(0)
        self.keys = batch.column(0)
        self.kinds = batch.column(1).to_numpy(zero_copy_only=True)
        self.ints = batch.column(2).to_numpy(zero_copy_only=True)
        self.floats = batch.column(3).to_numpy(zero_copy_only=True)
        self.strs = batch.column(4)
        self.sorted_keys = _ArrowKeys(self.keys)
        self.index = ({k: i for i, k in enumerate(self.keys.to_pylist())}
                      if indexed else None)

    def _row(self, key):
        if self.index is not None:
            return self.index.get(key)
        i = bisect.bisect_left(self.sorted_keys, key)
        if i < len(self.sorted_keys) and self.sorted_keys[i] == key:
            return i
        return None

    def _value(self, row):
        kind = self.kinds[row]
        if kind == _STR:
            return self.strs[row].as_py()
        if kind == _INT:
            return int(self.ints[row])
        return (int(self.ints[row]), float(self.floats[row]), self.strs[row].as_py())

    def get(self, key):
        row = self._row(key)
        return None if row is None else self._value(row)

    def items(self):
        """Slices of CHUNK rows decoded at a time (to_pylist of a slice)."""
        for start in range(0, len(self.keys), self.CHUNK):
            stop = min(start + self.CHUNK, len(self.keys))
            keys = self.keys.slice(start, stop - start).to_pylist()
            strs = self.strs.slice(start, stop - start).to_pylist()
            for j, k in enumerate(keys):
                row = start + j
                kind = self.kinds[row]
                if kind == _STR:
                    yield k, strs[j]
                elif kind == _INT:
                    yield k, int(self.ints[row])
                else:
                    yield k, (int(self.ints[row]), float(self.floats[row]), strs[j])

    def prefix_keys(self, prefix):
        out = []
        i = bisect.bisect_left(self.sorted_keys, prefix)
        while i < len(self.sorted_keys):
            k = self.sorted_keys[i]
            if not k.startswith(prefix):
                break
            out.append(k)
            i += 1
        return out


# ----------------------------------------------------------------- Ray


class RayStore(Contender):
    name = "Ray object store"
    note = ("ray.put(table) once into the object store; each worker (a Ray actor) "
            "ray.get()s it, which deserializes a dict of its own (zero-copy only holds "
            "for numpy arrays and buffers); the object store and Ray's own processes "
            "(raylet, GCS) are not counted in PSS")
    runner = "ray"

    def available(self):
        try:
            import ray  # noqa: F401
        except ImportError:
            return "the ray package is not installed (pip install ray)"
        return None

    def start(self, tmp):
        """ray.init on this machine (once), with the bench modules on the
        workers' path, Ray's files under `tmp`."""
        import ray
        if ray.is_initialized():
            return
        here = os.path.dirname(os.path.abspath(__file__))
        paths = [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(paths)
        import logging
        ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING,
                 object_store_memory=1 << 30, _temp_dir=os.path.join(tmp, "ray"))

    def build(self, table, folder):
        import ray
        return ray.put(table)

    def open_reader(self, spec):
        import ray
        return ray.get(spec)

    def size(self, spec):
        return None


def shutdown():
    """Stops what a contender started for the whole run (Ray)."""
    import sys
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def make(cls_name):
    """A contender from its class name (in a worker)."""
    return globals()[cls_name]()


def all_contenders():
    return [PermafrostFile(), PermafrostShare(), PermafrostOrdered(), PickleCopy(),
            ForkCow(), ForkCowFrozen(), UltraDictShared(), Sqlite(), Lmdb(), Marisa(),
            ArrowIpc(), ArrowIpcSorted(), Dbm(), ManagerDict(), RayStore()]
