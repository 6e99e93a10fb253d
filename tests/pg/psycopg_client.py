#!/usr/bin/env python3
"""psycopg 3 against Sluice's PostgreSQL port: the extended query protocol
(bound parameters of every column type, prepared statements, binary rows,
pipelined executemany), transactions with commit, rollback and savepoints,
and the SQLSTATEs applications branch on.

Run by tests/tests/pg_clients.rs, which first writes the time-series table
`boiler` into the database over HTTP line protocol:

    boiler,unit=7 temp=80   1700000000 s
    boiler,unit=8 temp=70   1700000000 s
    boiler,unit=7 temp=90.5 1700000060 s

Each check prints one line; any failure exits 1 with what was expected and
what came back.
"""

import argparse
import sys
import traceback
from datetime import datetime, timezone
from decimal import Decimal

import psycopg
from psycopg import errors


class CheckFailed(Exception):
    pass


def expect(got, want, what):
    if got != want:
        raise CheckFailed(f"{what}: expected {want!r}, got {got!r}")


def expect_sqlstate(conn, sql, sqlstate, what, params=None):
    """Runs `sql`, which must fail with `sqlstate`; returns the error."""
    try:
        conn.execute(sql, params)
    except psycopg.Error as e:
        expect(e.sqlstate, sqlstate, f"{what}: SQLSTATE of {sql!r} (message: {e})")
        return e
    raise CheckFailed(f"{what}: {sql!r} succeeded; expected SQLSTATE {sqlstate}")


class Client:
    def __init__(self, args):
        self.args = args

    def connect(self, autocommit=True):
        return psycopg.connect(
            host=self.args.host,
            port=self.args.port,
            dbname=self.args.dbname,
            user="sluice",
            connect_timeout=10,
            autocommit=autocommit,
        )


# Tables are created on an autocommit connection: DDL is refused inside a
# transaction block. Every check but the first makes its own tables, so one
# failing check does not take the others with it; `devices` is shared and
# written without parameters.
def setup(c):
    with c.connect() as conn:
        conn.execute(
            "CREATE TABLE devices (id integer PRIMARY KEY, unit text NOT NULL UNIQUE, "
            "price numeric(8,2), CONSTRAINT price_positive CHECK (price > 0))"
        )
        conn.execute("INSERT INTO devices VALUES (1, '7', 12.50), (2, '8', NULL), (3, '9', 0.01)")


TYPED = """
CREATE TABLE {name} (
  id integer PRIMARY KEY,
  label text,
  rating double precision,
  active boolean,
  price numeric(8,2),
  installed timestamptz
)
"""

PUMP = (
    1,
    "pump",
    4.5,
    True,
    Decimal("12.50"),
    datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc),
)
PYTHON_TYPES = [int, str, float, bool, Decimal, datetime]


def check_parameters(c):
    """Bound parameters of each type go in and come back as the same Python
    values, and a parameter is a value, never SQL text."""
    with c.connect() as conn:
        conn.execute(TYPED.format(name="typed"))
        insert = "INSERT INTO typed VALUES (%s, %s, %s, %s, %s, %s)"
        conn.execute(insert, PUMP)
        conn.execute(insert, (2, "valve", None, None, None, None))
        sneaky = "o'brien'); DROP TABLE typed; --"
        conn.execute(insert, (3, sneaky, 1.25, False, Decimal("0.01"), None))

        row = conn.execute("SELECT * FROM typed WHERE id = %s", (1,)).fetchone()
        expect(row, PUMP, "row 1 read back by a bound id")
        expect(
            [type(v) for v in row],
            PYTHON_TYPES,
            "Python types of row 1 (integer, text, float8, bool, numeric, timestamptz)",
        )
        row = conn.execute("SELECT * FROM typed WHERE id = %s", (2,)).fetchone()
        expect(row, (2, "valve", None, None, None, None), "NULL parameters stored as NULL")
        row = conn.execute("SELECT id FROM typed WHERE label = %s", (sneaky,)).fetchone()
        expect(row, (3,), "a text parameter with quotes and semicolons matched literally")
        expect(
            conn.execute("SELECT count(*) FROM typed").fetchone(),
            (3,),
            "count after inserting three rows",
        )
        # Several parameters, in comparisons and expressions.
        rows = conn.execute(
            "SELECT id FROM typed WHERE rating > %s AND id <> %s ORDER BY id",
            (1.0, 3),
        ).fetchall()
        expect(rows, [(1,)], "rating > 1.0 AND id <> 3")
        row = conn.execute(
            "UPDATE typed SET rating = rating + %s WHERE id = %s RETURNING id, rating",
            (0.5, 1),
        ).fetchone()
        expect(row, (1, 5.0), "UPDATE ... RETURNING with parameters")


def check_prepared(c):
    """psycopg prepares a statement server-side once it has run it
    `prepare_threshold` times (and at once with prepare=True); the answers
    must not change once it is a named prepared statement."""
    with c.connect() as conn:
        conn.execute("CREATE TABLE squares (n integer PRIMARY KEY, sq bigint NOT NULL)")
        conn.execute(
            "INSERT INTO squares VALUES " + ", ".join(f"({n}, {n * n})" for n in range(20))
        )
        for n in range(20):
            row = conn.execute("SELECT sq FROM squares WHERE n = %s", (n,)).fetchone()
            expect(row, (n * n,), f"square of {n}, run {n + 1} of the same statement")
        row = conn.execute(
            "SELECT sq FROM squares WHERE n = %s", (12,), prepare=True
        ).fetchone()
        expect(row, (144,), "explicitly prepared statement")


def check_binary_rows(c):
    """A binary cursor asks for binary result columns; they decode to the
    same values as text ones."""
    with c.connect() as conn:
        conn.execute(TYPED.format(name="kinds"))
        conn.execute(
            "INSERT INTO kinds VALUES "
            "(1, 'pump', 4.5, true, 12.50, '2023-11-14 22:13:20+00'), "
            "(2, 'valve', NULL, NULL, NULL, NULL)"
        )
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                cur.execute("SELECT * FROM kinds ORDER BY id")
                rows = cur.fetchall()
            what = "binary" if binary else "text"
            expect(rows, [PUMP, (2, "valve", None, None, None, None)], f"{what} rows")
            expect([type(v) for v in rows[0]], PYTHON_TYPES, f"Python types of {what} row 1")


def check_executemany(c):
    """executemany runs the statement once per parameter set (pipelined by
    psycopg); rowcount sums their counts, and returning=True keeps each
    statement's RETURNING rows."""
    with c.connect() as conn:
        conn.execute(
            "CREATE TABLE readings (id serial PRIMARY KEY, device integer NOT NULL "
            "REFERENCES devices (id), value double precision NOT NULL)"
        )
        rows = [(1 + i % 3, i * 0.5) for i in range(100)]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO readings (device, value) VALUES (%s, %s)", rows)
            expect(cur.rowcount, 100, "rowcount of executemany over 100 rows")
        expect(
            conn.execute("SELECT count(*), sum(value) FROM readings").fetchone(),
            (100, sum(v for _, v in rows)),
            "count and sum of the inserted readings",
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (device, value) VALUES (%s, %s) RETURNING id",
                [(1, 1000.0), (2, 2000.0)],
                returning=True,
            )
            ids = []
            while True:
                ids.extend(r[0] for r in cur.fetchall())
                if not cur.nextset():
                    break
        expect(ids, [101, 102], "serial ids RETURNING from executemany")
        # A failing row in executemany inside a transaction undoes all of it.
        with c.connect(autocommit=False) as conn2:
            try:
                with conn2.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO readings (device, value) VALUES (%s, %s)",
                        [(1, 1.0), (99, 2.0), (1, 3.0)],
                    )
                raise CheckFailed("executemany with an unknown device succeeded")
            except errors.ForeignKeyViolation as e:
                expect(e.sqlstate, "23503", "SQLSTATE of the foreign key violation")
            conn2.rollback()
        expect(
            conn.execute("SELECT count(*) FROM readings").fetchone(),
            (102,),
            "readings after the rolled-back executemany",
        )


def check_transactions(c):
    """What one connection does in a transaction, another sees only once
    it is committed, and never if it is rolled back; savepoints undo part
    of a transaction."""
    with c.connect() as setup:
        setup.execute("CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL)")
    with c.connect(autocommit=False) as tx, c.connect() as other:

        def others_view():
            return other.execute("SELECT id, body FROM notes ORDER BY id").fetchall()

        tx.execute("INSERT INTO notes VALUES (%s, %s)", (1, "draft"))
        expect(
            tx.execute("SELECT body FROM notes WHERE id = 1").fetchone(),
            ("draft",),
            "a transaction reads its own uncommitted insert",
        )
        expect(others_view(), [], "another connection before COMMIT")
        tx.commit()
        expect(others_view(), [(1, "draft")], "another connection after COMMIT")

        tx.execute("UPDATE notes SET body = %s WHERE id = %s", ("changed", 1))
        tx.execute("INSERT INTO notes VALUES (2, 'gone')")
        tx.rollback()
        expect(others_view(), [(1, "draft")], "after ROLLBACK nothing changed")

        # Nested transaction() blocks are SAVEPOINT / RELEASE / ROLLBACK TO.
        with tx.transaction():
            tx.execute("INSERT INTO notes VALUES (3, 'kept')")
            with tx.transaction():
                tx.execute("INSERT INTO notes VALUES (4, 'inner, kept')")
            with tx.transaction() as inner:
                tx.execute("INSERT INTO notes VALUES (5, 'undone')")
                raise psycopg.Rollback(inner)
        expect(
            others_view(),
            [(1, "draft"), (3, "kept"), (4, "inner, kept")],
            "savepoints: released one kept, rolled back one undone",
        )

        # psycopg's own BEGIN variants.
        tx.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        tx.execute("UPDATE notes SET body = 'serializable' WHERE id = 1")
        tx.commit()
        tx.isolation_level = None
        expect(
            others_view()[0],
            (1, "serializable"),
            "commit under BEGIN ISOLATION LEVEL SERIALIZABLE",
        )

        tx.read_only = True
        expect(
            tx.execute("SELECT count(*) FROM notes").fetchone(),
            (3,),
            "a read in a READ ONLY transaction",
        )
        expect_sqlstate(tx, "DELETE FROM notes", "25006", "a write in a READ ONLY transaction")
        tx.rollback()
        tx.read_only = None
        expect(len(others_view()), 3, "rows after the refused read-only DELETE")


def check_errors(c):
    """Constraint violations and the transaction states carry PostgreSQL's
    SQLSTATEs, and psycopg maps them to its exception classes."""
    with c.connect() as conn:
        insert = "INSERT INTO devices VALUES (%s, %s, %s)"
        cases = [
            ((1, "x", None), "23505", errors.UniqueViolation, "duplicate primary key"),
            ((9, "7", None), "23505", errors.UniqueViolation, "duplicate unique unit"),
            ((9, None, None), "23502", errors.NotNullViolation, "NULL unit"),
            ((9, "x", Decimal("-1")), "23514", errors.CheckViolation, "negative price"),
        ]
        for params, sqlstate, cls, what in cases:
            e = expect_sqlstate(conn, insert, sqlstate, what, params)
            expect(type(e), cls, f"{what}: psycopg exception class")
        conn.execute(
            "CREATE TABLE alarms (id integer PRIMARY KEY, "
            "device integer NOT NULL REFERENCES devices (id))"
        )
        expect_sqlstate(
            conn,
            "INSERT INTO alarms VALUES (%s, %s)",
            "23503",
            "alarm of an unknown device",
            (1, 42),
        )
        expect_sqlstate(conn, "SELECT * FROM nowhere", "42P01", "unknown table")
        expect_sqlstate(conn, "SELEC 1", "42601", "syntax error")
        expect(
            conn.execute("SELECT count(*) FROM devices").fetchone(),
            (3,),
            "no failed insert left a row",
        )

    with c.connect(autocommit=False) as tx:
        tx.execute("INSERT INTO devices (id, unit) VALUES (10, '10')")
        expect_sqlstate(
            tx,
            "INSERT INTO devices (id, unit) VALUES (11, '7')",
            "23505",
            "duplicate in a transaction",
        )
        # Once a statement failed, the transaction only takes ROLLBACK.
        expect_sqlstate(tx, "SELECT 1", "25P02", "a statement after the failed one")
        expect(
            tx.info.transaction_status,
            psycopg.pq.TransactionStatus.INERROR,
            "transaction status after the failure",
        )
        tx.rollback()
        expect(
            tx.execute("SELECT count(*) FROM devices WHERE id = 10").fetchone(),
            (0,),
            "the insert before the failure was rolled back",
        )
        tx.rollback()
        tx.execute("SELECT 1")
        expect_sqlstate(
            tx, "CREATE TABLE nope (a integer PRIMARY KEY)", "25001", "DDL in a transaction block"
        )
        tx.rollback()


def check_time_series(c):
    """The time-series table written over HTTP reads with parameters, with
    timestamps as aware datetimes, and joins the relational table."""
    t0 = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    t1 = datetime(2023, 11, 14, 22, 14, 20, tzinfo=timezone.utc)
    with c.connect() as conn:
        rows = conn.execute(
            "SELECT time, temp FROM boiler WHERE unit = %s ORDER BY time", ("7",)
        ).fetchall()
        expect(rows, [(t0, 80.0), (t1, 90.5)], "boiler rows of unit 7")
        rows = conn.execute(
            "SELECT unit FROM boiler WHERE time > %s ORDER BY unit", (t0,)
        ).fetchall()
        expect(rows, [("7",)], "boiler rows after a bound timestamptz")
        rows = conn.execute(
            "SELECT d.id, max(b.temp) FROM boiler b JOIN devices d ON b.unit = d.unit "
            "WHERE b.temp >= %s GROUP BY d.id ORDER BY d.id",
            (70,),
        ).fetchall()
        expect(rows, [(1, 90.5), (2, 70.0)], "boiler joined with devices")


CHECKS = [
    check_parameters,
    check_prepared,
    check_binary_rows,
    check_executemany,
    check_transactions,
    check_errors,
    check_time_series,
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dbname", required=True)
    c = Client(p.parse_args())
    setup(c)
    failed = 0
    # A failing check is reported and the rest still run.
    for check in CHECKS:
        try:
            check(c)
            print(f"ok   {check.__name__}")
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {check.__name__}: {e}")
        except Exception as e:  # an unexpected error is a failure too
            failed += 1
            print(f"FAIL {check.__name__}: unexpected {type(e).__name__}: {e}")
            traceback.print_exc()
    if failed:
        print(f"{failed} of {len(CHECKS)} psycopg checks failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
