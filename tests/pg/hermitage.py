#!/usr/bin/env python3
"""The Hermitage isolation cases (github.com/ept/hermitage, the ones
PostgreSQL's serializable level prevents) against Sluice's PostgreSQL port,
with two or three psycopg connections interleaving their statements.

Sluice's serializable isolation validates each commit against what the
transaction read (optimistic), and UPDATE and DELETE lock the rows they
change, as PostgreSQL does: a second writer of a row waits until the first
ends, then goes on from the state it left if nothing else it read has
changed, and otherwise fails with SQLSTATE 40001 (or 40P01 for a deadlock).
So each session runs its statements on a thread of its own; a statement
that has not answered after a moment is blocked, and the script goes on
with the other sessions as Hermitage's scripts do. A case passes when its
anomaly cannot be observed: every value read belongs to a consistent
snapshot, the final table is that of some serial order of the committed
transactions, and where both of two conflicting transactions would have to
commit for the anomaly, the later one fails. The first transaction to
commit in each case read nothing anyone else committed, so it must commit.

Each case prints one line saying how the anomaly was prevented; any failure
exits 1 naming the statement, what was expected and what came back.
"""

import argparse
import concurrent.futures
import sys

import psycopg

INITIAL = {1: 10, 2: 20}
# How long a statement may take before it counts as blocked, and how long a
# blocked one may stay blocked once the session is needed again.
BLOCKED_AFTER = 2.0
STUCK_AFTER = 20
# Serialization failure and deadlock: the transaction must be retried.
RETRY = ("40001", "40P01")


class CaseFailed(Exception):
    pass


def expect(got, want, what):
    if got != want:
        raise CaseFailed(f"{what}: expected {want!r}, got {got!r}")


class Tx:
    """One connection with autocommit off, so psycopg sends BEGIN before
    its first statement and every statement up to commit() or rollback()
    is one transaction. Once a statement fails with 40001 the transaction
    is over: its later statements are skipped (as a client would after
    the error; PostgreSQL would answer them with 25P02) and its commit
    reports failure."""

    def __init__(self, case, name):
        self.case, self.name = case, name
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.conn = self.pool.submit(case.connect, autocommit=False).result()
        self.failed_at = None
        self.blocked = []
        self.pending = None
        # Hermitage opens every session with `begin;` before the first
        # statement of any; a statement that reads no table makes psycopg
        # send BEGIN now, so the snapshot is taken here as in the case.
        self.pool.submit(self.conn.execute, "SELECT 1").result()

    def _settle(self):
        """Waits for a blocked statement before the session does more."""
        if self.pending is None:
            return
        fut, sql = self.pending
        self.pending = None
        try:
            fut.result(timeout=STUCK_AFTER)
        except concurrent.futures.TimeoutError:
            raise CaseFailed(f"{self.name}: {sql!r} is still blocked after {STUCK_AFTER} s")
        except psycopg.Error as e:
            self._failed(e, sql)

    def _execute(self, sql):
        cur = self.conn.execute(sql)
        return dict(cur.fetchall()) if cur.description else {}

    def run(self, sql):
        """Runs `sql` on the case's table; returns the rows as {id: value},
        or None if the statement is blocked or the transaction has failed
        (now or before)."""
        self._settle()
        if self.failed_at:
            return None
        sql = sql.format(t=self.case.table)
        fut = self.pool.submit(self._execute, sql)
        try:
            return fut.result(timeout=BLOCKED_AFTER)
        except concurrent.futures.TimeoutError:
            self.blocked.append(sql)
            self.pending = (fut, sql)
            return None
        except psycopg.Error as e:
            self._failed(e, sql)
            return None

    def commit(self):
        """COMMIT; returns whether the transaction committed."""
        self._settle()
        if self.failed_at:
            return False
        try:
            self.pool.submit(self.conn.commit).result(timeout=STUCK_AFTER)
            return True
        except psycopg.Error as e:
            self._failed(e, "COMMIT")
            return False

    def rollback(self):
        self._settle()
        self.pool.submit(self.conn.rollback).result(timeout=STUCK_AFTER)

    def _failed(self, e, sql):
        if e.sqlstate not in RETRY:
            raise CaseFailed(
                f"{self.name}: {sql!r} failed with SQLSTATE {e.sqlstate} ({e}); "
                "only serialization failures (40001, 40P01) are expected"
            )
        self.failed_at = (sql, e.sqlstate)
        self.pool.submit(self.conn.rollback).result(timeout=STUCK_AFTER)

    def close(self):
        self._settle()
        self.pool.submit(self.conn.close).result(timeout=STUCK_AFTER)
        self.pool.shutdown()

    def how(self):
        """How the transaction ended, for the report line."""
        waited = f" after waiting at {self.blocked[0]!r}" if self.blocked else ""
        if self.failed_at:
            sql, code = self.failed_at
            return f"{self.name} got {code} at {sql!r}{waited}"
        return f"{self.name} committed{waited}"

    def must_fail(self, why):
        """The anomaly needs this transaction to commit: it must have got
        40001 instead."""
        if not self.failed_at:
            raise CaseFailed(f"{self.name} committed; it must fail with 40001 ({why})")
        return self.how()


class Case:
    """One Hermitage case on its own table `test_<name>` holding INITIAL."""

    def __init__(self, args, name):
        self.args = args
        self.table = "test_" + name.lower().replace("-", "_")
        self.txs = []
        with self.connect() as conn:
            conn.execute(f"CREATE TABLE {self.table} (id integer PRIMARY KEY, value integer)")
            conn.execute(f"INSERT INTO {self.table} (id, value) VALUES (1, 10), (2, 20)")

    def connect(self, autocommit=True):
        return psycopg.connect(
            host=self.args.host,
            port=self.args.port,
            dbname=self.args.dbname,
            user="sluice",
            connect_timeout=10,
            autocommit=autocommit,
        )

    def tx(self, name):
        t = Tx(self, name)
        self.txs.append(t)
        return t

    def final(self, want, what="table after the case"):
        with self.connect() as conn:
            rows = dict(conn.execute(f"SELECT id, value FROM {self.table}").fetchall())
        expect(rows, want, what)

    def close(self):
        for t in self.txs:
            t.close()


def first_commits(t):
    if not t.commit():
        raise CaseFailed(
            f"{t.name} failed at {t.failed_at!r}, but it commits first and read "
            "nothing another transaction had committed"
        )


def snapshot_read(got, want, what):
    """A read that must see the transaction's snapshot, unless the
    transaction already failed with 40001 (got is None)."""
    if got is not None:
        expect(got, want, what)


# Each case follows the Hermitage script of the same name; T1, T2 and T3
# are its sessions.


def g0(c):
    """Write cycles: the two transactions' writes to rows 1 and 2 must not
    interleave."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    t1.run("update {t} set value = 11 where id = 1")
    t2.run("update {t} set value = 12 where id = 1")
    t1.run("update {t} set value = 21 where id = 2")
    first_commits(t1)
    expect(t1.run("select * from {t}"), {1: 11, 2: 21}, "T1 after its commit")
    t1.commit()
    t2.run("update {t} set value = 22 where id = 2")
    if t2.commit():
        # Blind overwrites of both rows: serial order T1, T2.
        c.final({1: 12, 2: 22}, "both committed: T2's writes on top of T1's")
    else:
        c.final({1: 11, 2: 21}, "T2 failed: T1's writes alone")
    return t2.how()


def g1a(c):
    """Aborted reads: T2 never sees what T1 wrote and rolled back."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    t1.run("update {t} set value = 101 where id = 1")
    expect(t2.run("select * from {t}"), INITIAL, "T2 while T1 is open")
    t1.rollback()
    expect(t2.run("select * from {t}"), INITIAL, "T2 after T1's rollback")
    first_commits(t2)
    c.final(INITIAL)
    return "T2 read only committed values and committed"


def g1b(c):
    """Intermediate reads: T2 never sees T1's value before T1's last write."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    t1.run("update {t} set value = 101 where id = 1")
    expect(t2.run("select * from {t}"), INITIAL, "T2 while T1 is open")
    t1.run("update {t} set value = 11 where id = 1")
    first_commits(t1)
    # Serializable: T2 still reads its snapshot (a non-repeatable read of 11
    # would be an anomaly of its own), or fails.
    snapshot_read(t2.run("select * from {t}"), INITIAL, "T2 after T1's commit")
    t2.commit()
    c.final({1: 11, 2: 20})
    return f"T2 never saw 101; {t2.how()}"


def g1c(c):
    """Circular information flow: each reads the row the other writes, so
    they cannot both commit."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    t1.run("update {t} set value = 11 where id = 1")
    t2.run("update {t} set value = 22 where id = 2")
    expect(t1.run("select * from {t} where id = 2"), {2: 20}, "T1 reads row 2")
    expect(t2.run("select * from {t} where id = 1"), {1: 10}, "T2 reads row 1")
    first_commits(t1)
    t2.commit()
    how = t2.must_fail("T2 read row 1 before T1's committed write of it")
    c.final({1: 11, 2: 20})
    return how


def otv(c):
    """Observed transaction vanishes: T3 must read one state throughout,
    never T1's row 1 next to T2's row 2."""
    t1, t2, t3 = c.tx("T1"), c.tx("T2"), c.tx("T3")
    t1.run("update {t} set value = 11 where id = 1")
    t1.run("update {t} set value = 19 where id = 2")
    t2.run("update {t} set value = 12 where id = 1")
    first_commits(t1)
    seen = [t3.run("select * from {t} where id = 1")]
    t2.run("update {t} set value = 18 where id = 2")
    seen.append(t3.run("select * from {t} where id = 2"))
    t2_committed = t2.commit()
    seen.append(t3.run("select * from {t} where id = 2"))
    seen.append(t3.run("select * from {t} where id = 1"))
    t3.commit()
    states = [INITIAL, {1: 11, 2: 19}] + ([{1: 12, 2: 18}] if t2_committed else [])
    observed = {}
    for rows in seen:
        for k, v in (rows or {}).items():
            if observed.setdefault(k, v) != v:
                raise CaseFailed(f"T3 read row {k} as {observed[k]} and then {v}: {seen}")
    if not any(all(s[k] == v for k, v in observed.items()) for s in states):
        raise CaseFailed(f"T3's reads {observed} are no committed state of {states}")
    c.final({1: 12, 2: 18} if t2_committed else {1: 11, 2: 19})
    return f"T3 read one state {observed}; {t2.how()}"


def pmp(c):
    """Predicate-many-preceders: a row inserted and committed by T2 does not
    appear in T1's later predicate read."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    expect(t1.run("select * from {t} where value = 30"), {}, "T1's first predicate read")
    t2.run("insert into {t} (id, value) values (3, 30)")
    first_commits(t2)
    snapshot_read(t1.run("select * from {t} where value % 3 = 0"), {}, "T1 after T2's insert")
    t1.commit()
    c.final({1: 10, 2: 20, 3: 30})
    return f"T1 never saw row 3; {t1.how()}"


def pmp_write(c):
    """Predicate-many-preceders for write predicates: T2 deleted the row
    where value = 20 as of its snapshot, which T1 changed and committed."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    t1.run("update {t} set value = value + 10")
    t2.run("delete from {t} where value = 20")
    first_commits(t1)
    # T2's own delete took row 2 away, and T1's row 1 = 20 is not in its
    # snapshot: nothing has value 20.
    snapshot_read(t2.run("select * from {t} where value = 20"), {}, "T2 after T1's commit")
    t2.commit()
    how = t2.must_fail("T2's delete read row 2 before T1's committed update of it")
    c.final({1: 20, 2: 30})
    return how


def p4(c):
    """Lost update: both read row 1 and write it; the second must not
    overwrite the first."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    expect(t1.run("select * from {t} where id = 1"), {1: 10}, "T1 reads row 1")
    expect(t2.run("select * from {t} where id = 1"), {1: 10}, "T2 reads row 1")
    t1.run("update {t} set value = 11 where id = 1")
    t2.run("update {t} set value = 11 where id = 1")
    first_commits(t1)
    t2.commit()
    how = t2.must_fail("T2 read row 1 before T1's committed update of it")
    c.final({1: 11, 2: 20})
    return how


def g_single(c):
    """Read skew: T1 read row 1 before T2 changed both rows; its read of
    row 2 must not show T2's value."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    expect(t1.run("select * from {t} where id = 1"), {1: 10}, "T1 reads row 1")
    t2.run("select * from {t} where id = 1")
    t2.run("select * from {t} where id = 2")
    t2.run("update {t} set value = 12 where id = 1")
    t2.run("update {t} set value = 18 where id = 2")
    first_commits(t2)
    snapshot_read(t1.run("select * from {t} where id = 2"), {2: 20}, "T1 reads row 2")
    t1.commit()
    c.final({1: 12, 2: 18})
    return f"T1 read 1 => 10, 2 => 20; {t1.how()}"


def g_single_predicate(c):
    """Read skew through predicates: T1's second predicate read must not
    find the row T2 changed."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    expect(t1.run("select * from {t} where value % 5 = 0"), INITIAL, "T1's first predicate read")
    t2.run("update {t} set value = 12 where value = 10")
    first_commits(t2)
    snapshot_read(t1.run("select * from {t} where value % 3 = 0"), {}, "T1's second predicate read")
    t1.commit()
    c.final({1: 12, 2: 20})
    return f"T1 did not see 1 => 12; {t1.how()}"


def g_single_write(c):
    """Read skew through a write predicate: T1 read row 1 at 10, then
    deletes where value = 20, which T2 has changed meanwhile."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    expect(t1.run("select * from {t} where id = 1"), {1: 10}, "T1 reads row 1")
    t2.run("select * from {t}")
    t2.run("update {t} set value = 12 where id = 1")
    t2.run("update {t} set value = 18 where id = 2")
    first_commits(t2)
    t1.run("delete from {t} where value = 20")
    t1.commit()
    how = t1.must_fail("T1 read rows 1 and 2 before T2's committed updates of them")
    c.final({1: 12, 2: 18})
    return how


def g2_item(c):
    """Write skew: each reads both rows and updates a different one; at
    most one may commit."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    expect(t1.run("select * from {t} where id in (1, 2)"), INITIAL, "T1 reads both rows")
    expect(t2.run("select * from {t} where id in (1, 2)"), INITIAL, "T2 reads both rows")
    t1.run("update {t} set value = 11 where id = 1")
    t2.run("update {t} set value = 21 where id = 2")
    first_commits(t1)
    t2.commit()
    how = t2.must_fail("T2 read row 1 before T1's committed update of it")
    c.final({1: 11, 2: 20})
    return how


def g2(c):
    """Anti-dependency cycle through predicates: each inserts a row the
    other's predicate read would have found; at most one may commit."""
    t1, t2 = c.tx("T1"), c.tx("T2")
    expect(t1.run("select * from {t} where value % 3 = 0"), {}, "T1's predicate read")
    expect(t2.run("select * from {t} where value % 3 = 0"), {}, "T2's predicate read")
    t1.run("insert into {t} (id, value) values (3, 30)")
    t2.run("insert into {t} (id, value) values (4, 42)")
    first_commits(t1)
    t2.commit()
    how = t2.must_fail("T1's committed row 3 matches T2's earlier predicate read")
    c.final({1: 10, 2: 20, 3: 30})
    return how


def g2_two_edges(c):
    """Fekete et al.'s read-only anomaly: T3 saw T2's commit but not T1's
    write, and T1 read row 2 before T2; T1 must not commit."""
    t1 = c.tx("T1")
    expect(t1.run("select * from {t}"), INITIAL, "T1 reads the table")
    t2 = c.tx("T2")
    t2.run("update {t} set value = value + 5 where id = 2")
    first_commits(t2)
    t3 = c.tx("T3")
    expect(t3.run("select * from {t}"), {1: 10, 2: 25}, "T3 reads after T2's commit")
    # Read-only, and nothing committed since its snapshot.
    if not t3.commit():
        raise CaseFailed(
            f"read-only T3 got 40001 at {t3.failed_at!r}; nothing committed since it began"
        )
    t1.run("update {t} set value = 0 where id = 1")
    t1.commit()
    how = t1.must_fail("T1 read row 2 before T2's committed update of it")
    c.final({1: 10, 2: 25})
    return how


CASES = [
    ("G0", g0),
    ("G1a", g1a),
    ("G1b", g1b),
    ("G1c", g1c),
    ("OTV", otv),
    ("PMP", pmp),
    ("PMP-write", pmp_write),
    ("P4", p4),
    ("G-single", g_single),
    ("G-single-predicate", g_single_predicate),
    ("G-single-write", g_single_write),
    ("G2-item", g2_item),
    ("G2", g2),
    ("G2-two-edges", g2_two_edges),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dbname", required=True)
    args = p.parse_args()
    failed = 0
    for name, run in CASES:
        case = None
        try:
            case = Case(args, name)
            print(f"{name}: prevented: {run(case)}")
        except CaseFailed as e:
            failed += 1
            print(f"{name}: FAILED: {e}")
        except psycopg.Error as e:
            failed += 1
            print(f"{name}: FAILED: unexpected {type(e).__name__} (SQLSTATE {e.sqlstate}): {e}")
        finally:
            if case:
                case.close()
    if failed:
        print(f"{failed} of {len(CASES)} Hermitage cases failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
