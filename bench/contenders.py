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
"""

import os
import pickle

PROTO = 5


class Contender:
    name = "?"
    note = ""

    def available(self):
        """None if it can run here, else why not."""
        return None

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


class ManagerDict(Contender):
    name = "multiprocessing.Manager dict"
    note = "one copy in the manager process; every lookup is a round trip"

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


def all_contenders():
    return [PermafrostFile(), PermafrostShare(), PickleCopy(), Sqlite(), Lmdb(),
            Marisa(), Dbm(), ManagerDict()]
