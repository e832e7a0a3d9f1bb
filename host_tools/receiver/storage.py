"""The receiver's database: SQLite (default, no set-up) or PostgreSQL (several
receiver processes against one database).

One upload is one transaction (docs/upload.md sections 3 and 5). It locks the
terminal's row, so two exchanges of one terminal never interleave even on two
receivers; what must hold across terminals is decided by constraints:

* payments: PRIMARY KEY (terminal_id, record_id): a record is stored once;
* spends: PRIMARY KEY (issuer_kid, wallet_id, counter): the first genuine
  payment that used a wallet counter holds it; an INSERT .. ON CONFLICT DO
  NOTHING that inserts nothing is a double spend. PostgreSQL makes a
  concurrent insert of the same key wait for the holder's commit, so two
  receivers cannot both believe they were first.

A 4xx changes nothing, except that a conflicting record is logged against
its terminal (terminal_events), in a transaction of its own.
"""
import hashlib
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from queue import Queue

# How far below its cursor a payment's offline spend is summed (upload.md
# section 5): a journal holds at most ~1,500 records, so no honest cursor is
# further back; a lying one only flags the liar's own payments.
_LOOKBACK = 4096

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS terminals (
        terminal_id TEXT PRIMARY KEY, ack BIGINT NOT NULL, max_time BIGINT NOT NULL,
        first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, conflicts BIGINT NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS payments (
        terminal_id TEXT NOT NULL, record_id BIGINT NOT NULL, digest {blob} NOT NULL,
        payload {blob} NOT NULL, received_at BIGINT NOT NULL,
        issuer_kid TEXT, wallet_id TEXT, serial TEXT, counter BIGINT, amount BIGINT,
        currency INTEGER, merchant_id TEXT, reference TEXT, seq BIGINT, ttime BIGINT,
        cursor BIGINT, genuine INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
        PRIMARY KEY (terminal_id, record_id))""",
    """CREATE TABLE IF NOT EXISTS spends (
        issuer_kid TEXT NOT NULL, wallet_id TEXT NOT NULL, counter BIGINT NOT NULL,
        terminal_id TEXT NOT NULL, record_id BIGINT NOT NULL,
        PRIMARY KEY (issuer_kid, wallet_id, counter))""",
    """CREATE TABLE IF NOT EXISTS revoked (
        kind TEXT NOT NULL, value TEXT NOT NULL, reason TEXT NOT NULL, at BIGINT NOT NULL,
        PRIMARY KEY (kind, value))""",
    """CREATE TABLE IF NOT EXISTS terminal_events (
        terminal_id TEXT NOT NULL, at BIGINT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL)""",
]

_PAYMENT_COLUMNS = ("terminal_id", "record_id", "digest", "payload", "received_at", "issuer_kid",
                    "wallet_id", "serial", "counter", "amount", "currency", "merchant_id", "reference",
                    "seq", "ttime", "cursor", "genuine", "status", "reason")


class StorageError(Exception):
    pass


class Revoked(StorageError):
    pass


class Gap(StorageError):
    def __init__(self, ack):
        super().__init__("after is above the receiver's ack %d" % ack)
        self.ack = ack


class Conflict(StorageError):
    pass


class _Retry(Exception):
    pass


def open_storage(url, pool=4):
    """A Storage for `sqlite:///path` (relative; `sqlite:////abs` or
    `sqlite:///` + an absolute path) or `postgresql://...`."""
    if url.startswith("sqlite:///"):
        return SQLiteStorage(url[len("sqlite:///"):])
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStorage(url, pool)
    raise StorageError("unsupported database URL %r (sqlite:///path or postgresql://...)" % (url,))


class Storage:
    """Connections come from a small pool; every public method is one transaction."""

    placeholder = "?"
    blob = "BLOB"

    def __init__(self, size):
        self._pool = Queue()
        self._size = size
        self._made = 0
        self._make_lock = threading.Lock()

    def _sql(self, q):
        return q if self.placeholder == "?" else q.replace("?", "%s")

    @contextmanager
    def _conn(self):
        with self._make_lock:
            if self._pool.empty() and self._made < self._size:
                self._made += 1
                self._pool.put(self._connect())
        conn = self._pool.get()
        try:
            yield conn
        finally:
            self._pool.put(conn)

    def close(self):
        while self._made:
            self._pool.get().close()
            self._made -= 1

    def init_schema(self):
        with self._conn() as c:
            self._begin(c)
            self._schema_lock(c)
            for q in _SCHEMA:
                c.execute(q.format(blob=self.blob))
            c.commit()

    def _schema_lock(self, c):
        pass

    # --- revocation -----------------------------------------------------
    def revoke(self, kind, value, reason=""):
        """kind 'fingerprint' (SHA-256 of a certificate's DER, hex) or 'terminal'."""
        if kind not in ("fingerprint", "terminal"):
            raise ValueError(kind)
        with self._conn() as c:
            self._begin(c)
            c.execute(self._sql("INSERT INTO revoked (kind, value, reason, at) VALUES (?, ?, ?, ?) "
                                "ON CONFLICT (kind, value) DO NOTHING"),
                      (kind, value.lower(), reason, int(time.time())))
            c.commit()

    def revoked(self):
        with self._conn() as c:
            rows = c.execute("SELECT kind, value, reason, at FROM revoked ORDER BY at, kind, value").fetchall()
            c.rollback()
        return [dict(zip(("kind", "value", "reason", "at"), r)) for r in rows]

    # --- reading ----------------------------------------------------------
    def ledger(self, terminal_id=None):
        """Every stored payment as a dict, by terminal and record id."""
        q = ("SELECT terminal_id, record_id, issuer_kid, wallet_id, serial, counter, amount, currency, "
             "merchant_id, reference, seq, ttime, cursor, received_at, status, reason FROM payments")
        args = ()
        if terminal_id:
            q += " WHERE terminal_id = ?"
            args = (terminal_id.lower(),)
        q += " ORDER BY terminal_id, record_id"
        names = ("terminal_id", "record_id", "issuer_kid", "wallet_id", "serial", "counter", "amount",
                 "currency", "merchant_id", "reference", "seq", "time", "cursor", "received_at",
                 "status", "reason")
        with self._conn() as c:
            rows = c.execute(self._sql(q), args).fetchall()
            c.rollback()
        return [dict(zip(names, r)) for r in rows]

    def terminals(self):
        with self._conn() as c:
            rows = c.execute("SELECT terminal_id, ack, max_time, first_seen, last_seen, conflicts "
                             "FROM terminals ORDER BY terminal_id").fetchall()
            events = c.execute("SELECT terminal_id, at, kind, detail FROM terminal_events "
                               "ORDER BY at").fetchall()
            c.rollback()
        out = {r[0]: dict(zip(("terminal_id", "ack", "max_time", "first_seen", "last_seen", "conflicts"), r),
                          events=[]) for r in rows}
        for tid, at, kind, detail in events:
            out.setdefault(tid, {"terminal_id": tid, "events": []})["events"].append(
                {"at": at, "kind": kind, "detail": detail})
        return list(out.values())

    # --- the upload ---------------------------------------------------------
    def ingest(self, terminal_id, fingerprint, upload, check, now):
        """Store an upload's records for `terminal_id` (hex) in one transaction;
        returns the new ack. check(record_id, payload) -> checks.Verdict.
        Raises Revoked, Gap or Conflict (nothing stored)."""
        for attempt in range(8):
            try:
                with self._conn() as c:
                    try:
                        return self._ingest(c, terminal_id, fingerprint, upload, check, now)
                    except BaseException:
                        c.rollback()
                        raise
            except _Retry:
                time.sleep(0.005 * (attempt + 1))
            except Conflict as e:
                self._event(terminal_id, now, "conflict", str(e))
                raise
        raise StorageError("ingest: gave up after repeated lock conflicts")

    def _event(self, terminal_id, now, kind, detail):
        with self._conn() as c:
            self._begin(c)
            c.execute(self._sql("INSERT INTO terminal_events (terminal_id, at, kind, detail) VALUES (?, ?, ?, ?)"),
                      (terminal_id, now, kind, detail))
            c.execute(self._sql("UPDATE terminals SET conflicts = conflicts + 1 WHERE terminal_id = ?"),
                      (terminal_id,))
            c.commit()

    def _ingest(self, c, tid, fingerprint, upload, check, now):
        sql = self._sql
        self._begin(c)
        rev = c.execute(sql("SELECT kind, reason FROM revoked WHERE (kind = 'terminal' AND value = ?) "
                            "OR (kind = 'fingerprint' AND value = ?)"), (tid, fingerprint or "")).fetchone()
        if rev:
            raise Revoked("%s revoked%s" % (rev[0], ": " + rev[1] if rev[1] else ""))
        c.execute(sql("INSERT INTO terminals (terminal_id, ack, max_time, first_seen, last_seen) "
                      "VALUES (?, 0, 0, ?, ?) ON CONFLICT (terminal_id) DO NOTHING"), (tid, now, now))
        ack, max_time = c.execute(sql("SELECT ack, max_time FROM terminals WHERE terminal_id = ?"
                                      + self._for_update), (tid,)).fetchone()
        if upload.after > ack:
            raise Gap(ack)
        recs = upload.records
        new_ack = ack
        if recs:
            hi = recs[-1][0]
            new_ack = max(ack, hi)
            # Records at or below the ack were stored before: the batch must
            # repeat them byte for byte and leave none out (its claim: every
            # record in (after, hi]).
            if upload.after < ack:
                stored = dict(c.execute(sql("SELECT record_id, digest FROM payments WHERE terminal_id = ? "
                                            "AND record_id > ? AND record_id <= ?"),
                                        (tid, upload.after, min(hi, ack))).fetchall())
                for rid, payload in recs:
                    if rid > ack:
                        break
                    d = stored.pop(rid, None)
                    if d is None:
                        raise Conflict("record %d: not in the batch that covered it before" % rid)
                    if bytes(d) != hashlib.sha256(payload).digest():
                        raise Conflict("record %d: different bytes under an id already stored" % rid)
                if stored:
                    raise Conflict("record %d: stored before, left out of this batch" % min(stored))
            verdicts = [check(rid, payload) for rid, payload in recs if rid > ack]
            if verdicts:
                max_time = self._store(c, tid, verdicts, ack, max_time, now)
        c.execute(sql("UPDATE terminals SET ack = ?, max_time = ?, last_seen = ? WHERE terminal_id = ?"),
                  (new_ack, max_time, now, tid))
        c.commit()
        return new_ack

    def _store(self, c, tid, verdicts, ack, max_time, now):
        sql = self._sql
        for v in verdicts:
            # The terminal's clock never goes back (docs/upload.md s.5).
            if v.time is not None:
                if v.time < max_time:
                    v.flag("clock-went-back")
                max_time = max(max_time, v.time)
        genuine = sorted((v for v in verdicts if v.genuine), key=lambda v: (v.issuer_kid, v.wallet_id, v.counter))
        if genuine:
            # One statement (one round trip), sorted so that concurrent
            # receivers take the keys' locks in the same order. RETURNING
            # names the rows inserted: a genuine payment missing from it found
            # its counter already held.
            held = {r[0] for r in self._insert(c, "spends", ("issuer_kid", "wallet_id", "counter", "terminal_id",
                                                             "record_id"),
                                               [(v.issuer_kid, v.wallet_id, v.counter, tid, v.record_id) for v in genuine],
                                               " ON CONFLICT (issuer_kid, wallet_id, counter) DO NOTHING "
                                               "RETURNING record_id").fetchall()}
            by_rid = {v.record_id: v for v in verdicts}
            holders = set()
            for v in genuine:
                if v.record_id in held:
                    continue
                v.flag("double-spend")
                h = c.execute(sql("SELECT terminal_id, record_id FROM spends WHERE issuer_kid = ? AND "
                                  "wallet_id = ? AND counter = ?"), (v.issuer_kid, v.wallet_id, v.counter)).fetchone()
                if h[0] == tid and h[1] in by_rid:
                    by_rid[h[1]].flag("double-spend")
                else:
                    holders.add((h[0], h[1]))
            self._offline_limit(c, tid, genuine, ack)
            for h in sorted(holders):
                row = c.execute(sql("SELECT reason FROM payments WHERE terminal_id = ? AND record_id = ?"
                                    + self._for_update), h).fetchone()
                if row is not None and "double-spend" not in row[0].split(","):
                    c.execute(sql("UPDATE payments SET status = 'flagged', reason = ? WHERE terminal_id = ? "
                                  "AND record_id = ?"), (",".join(filter(None, (row[0], "double-spend"))),) + h)
        self._insert(c, "payments", _PAYMENT_COLUMNS,
                     [(tid, v.record_id, v.digest, v.payload, now, v.issuer_kid, v.wallet_id, v.serial,
                       v.counter, v.amount, v.currency, v.merchant_id, v.reference, v.seq, v.time, v.cursor,
                       int(v.genuine), v.status, ",".join(v.reasons)) for v in verdicts])
        return max_time

    def _insert(self, c, table, columns, rows, suffix=""):
        # A multi-row INSERT: at most 64 rows of 19 values, far below both
        # databases' parameter limits.
        one = "(%s)" % ", ".join("?" * len(columns))
        q = "INSERT INTO %s (%s) VALUES %s%s" % (table, ", ".join(columns), ", ".join([one] * len(rows)), suffix)
        return c.execute(self._sql(q), [x for r in rows for x in r])

    def _offline_limit(self, c, tid, genuine, ack):
        # A wallet's spend at this terminal over records it had not synced when
        # it paid: ids above the payment's cursor (tag 44), up to its own.
        with_cursor = [v for v in genuine if v.cursor is not None]
        if not with_cursor:
            return
        low = max(min(v.cursor for v in with_cursor), max(v.record_id for v in with_cursor) - _LOOKBACK)
        rows = []
        if low < ack:
            rows = c.execute(self._sql(
                "SELECT record_id, issuer_kid, wallet_id, amount FROM payments WHERE terminal_id = ? "
                "AND genuine = 1 AND record_id > ? AND record_id <= ?"), (tid, low, ack)).fetchall()
        spent = {}   # (issuer kid, wallet id) -> [(record id, amount)]
        for rid, k, w, a in rows:
            spent.setdefault((k, w), []).append((rid, a))
        for v in genuine:
            spent.setdefault((v.issuer_kid, v.wallet_id), []).append((v.record_id, v.amount))
        for v in with_cursor:
            total = sum(a for rid, a in spent[(v.issuer_kid, v.wallet_id)] if v.cursor < rid <= v.record_id)
            if total > v.offline_limit:
                v.flag("over-offline-limit")


class SQLiteStorage(Storage):
    _for_update = ""   # BEGIN IMMEDIATE already holds the database's write lock

    def __init__(self, path):
        super().__init__(1)  # one writer at a time is all SQLite has
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self):
        c = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        c.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the ack that follows it (NORMAL in
        # WAL mode can lose the last commits on power loss).
        c.execute("PRAGMA synchronous=FULL")
        return _SQLiteConn(c)

    def _begin(self, c):
        c.execute("BEGIN IMMEDIATE")


class _SQLiteConn:
    """sqlite3 in autocommit mode with explicit BEGIN, shaped like psycopg's
    connection for what Storage uses."""

    def __init__(self, c):
        self.c = c

    def execute(self, q, args=()):
        try:
            return self.c.execute(q, args)
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise _Retry() from e
            raise

    def commit(self):
        self.c.execute("COMMIT")

    def rollback(self):
        if self.c.in_transaction:
            self.c.execute("ROLLBACK")

    def close(self):
        self.c.close()


class PostgresStorage(Storage):
    placeholder = "%s"
    blob = "BYTEA"
    _for_update = " FOR UPDATE"

    def __init__(self, url, pool):
        super().__init__(pool)
        self.url = url

    def _connect(self):
        import psycopg
        return _PGConn(psycopg.connect(self.url))

    def _begin(self, c):
        pass  # psycopg opens a transaction at the first statement

    _TYPES = {"terminal_id": "text", "record_id": "bigint", "digest": "bytea", "payload": "bytea",
              "received_at": "bigint", "issuer_kid": "text", "wallet_id": "text", "serial": "text",
              "counter": "bigint", "amount": "bigint", "currency": "integer", "merchant_id": "text",
              "reference": "text", "seq": "bigint", "ttime": "bigint", "cursor": "bigint",
              "genuine": "integer", "status": "text", "reason": "text"}

    def _insert(self, c, table, columns, rows, suffix=""):
        # One array per column, unnested in order: a short statement psycopg
        # parses and prepares once, however many rows (a multi-row VALUES is
        # re-parsed on every call, which costs more than the insert).
        q = "INSERT INTO %s (%s) SELECT * FROM unnest(%s)%s" % (
            table, ", ".join(columns), ", ".join("%%b::%s[]" % self._TYPES[k] for k in columns), suffix)
        # Binary: arrays go over as they are, not quoted and escaped as text.
        return c.execute(q, [list(col) for col in zip(*rows)], binary=True)

    def _schema_lock(self, c):
        # Two receivers starting together would race on CREATE TABLE IF NOT EXISTS.
        c.execute("SELECT pg_advisory_xact_lock(7719532)")


class _PGConn:
    def __init__(self, c):
        self.c = c

    def execute(self, q, args=(), binary=False):
        import psycopg
        try:
            return self.c.execute(q, args, binary=binary)
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as e:
            raise _Retry() from e

    def commit(self):
        self.c.commit()

    def rollback(self):
        self.c.rollback()

    def close(self):
        self.c.close()
