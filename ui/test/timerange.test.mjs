import { test } from "node:test";
import assert from "node:assert/strict";
import { rewriteTimeRange } from "../src/timerange.js";

const r = (sql, iv = "1 hour") => rewriteTimeRange(sql, iv).sql;

test("replaces an existing now() - INTERVAL bound", () => {
  assert.equal(
    r("SELECT * FROM cpu WHERE time > now() - INTERVAL '5 minutes' ORDER BY time"),
    "SELECT * FROM cpu WHERE time >= now() - INTERVAL '1 hour' ORDER BY time",
  );
  assert.equal(
    r("select * from cpu where host = 'a' and time >= now() - interval '7 days' limit 5", "6 hours"),
    "select * from cpu where host = 'a' and time >= now() - INTERVAL '6 hours' limit 5",
  );
});

test("replaces literal lower bounds and past upper bounds", () => {
  assert.equal(
    r("SELECT * FROM cpu WHERE time >= '2026-01-01T00:00:00Z' AND time < '2026-01-02T00:00:00Z'"),
    "SELECT * FROM cpu WHERE time >= now() - INTERVAL '1 hour' AND time <= now()",
  );
  assert.equal(
    r("SELECT * FROM cpu WHERE time BETWEEN '2026-01-01' AND '2026-01-02' AND host='a'"),
    "SELECT * FROM cpu WHERE time >= now() - INTERVAL '1 hour' AND host='a'",
  );
  assert.equal(r("SELECT * FROM cpu c WHERE c.time > now() - INTERVAL '1 day'"), "SELECT * FROM cpu c WHERE c.time >= now() - INTERVAL '1 hour'");
});

test("inserts a WHERE before GROUP BY / ORDER BY / LIMIT", () => {
  assert.equal(r("SELECT * FROM cpu"), "SELECT * FROM cpu WHERE time >= now() - INTERVAL '1 hour'");
  assert.equal(r("SELECT * FROM cpu;"), "SELECT * FROM cpu WHERE time >= now() - INTERVAL '1 hour';");
  assert.equal(
    r("SELECT host, avg(v) FROM cpu GROUP BY host ORDER BY host LIMIT 3"),
    "SELECT host, avg(v) FROM cpu WHERE time >= now() - INTERVAL '1 hour' GROUP BY host ORDER BY host LIMIT 3",
  );
  assert.equal(
    r("SELECT *\nFROM cpu\nORDER BY time"),
    "SELECT *\nFROM cpu\nWHERE time >= now() - INTERVAL '1 hour'\nORDER BY time",
  );
});

test("adds to an existing WHERE, parenthesising OR", () => {
  assert.equal(
    r("SELECT * FROM cpu WHERE host = 'a' ORDER BY time"),
    "SELECT * FROM cpu WHERE host = 'a' AND time >= now() - INTERVAL '1 hour' ORDER BY time",
  );
  assert.equal(
    r("SELECT * FROM cpu WHERE host = 'a' OR host = 'b' LIMIT 10"),
    "SELECT * FROM cpu WHERE (host = 'a' OR host = 'b') AND time >= now() - INTERVAL '1 hour' LIMIT 10",
  );
});

test("ignores subqueries, strings and comments; works on the last statement", () => {
  assert.equal(
    r("SELECT * FROM (SELECT * FROM cpu LIMIT 5) s -- where\nORDER BY 1"),
    "SELECT * FROM (SELECT * FROM cpu LIMIT 5) s -- where\nWHERE time >= now() - INTERVAL '1 hour'\nORDER BY 1",
  );
  assert.equal(
    r("SELECT 1; SELECT * FROM cpu WHERE msg = 'order by'"),
    "SELECT 1; SELECT * FROM cpu WHERE msg = 'order by' AND time >= now() - INTERVAL '1 hour'",
  );
  assert.equal(rewriteTimeRange("SELECT 1", "1 hour").changed, false);
});

test("recognises reversed bounds: expr < time, expr <= time, literal > time", () => {
  assert.equal(
    r("SELECT * FROM cpu WHERE now() - INTERVAL '5 minutes' < time ORDER BY time"),
    "SELECT * FROM cpu WHERE time >= now() - INTERVAL '1 hour' ORDER BY time",
  );
  assert.equal(
    r("select * from cpu where host = 'a' and now() - interval '1 day' <= time limit 5", "6 hours"),
    "select * from cpu where host = 'a' and time >= now() - INTERVAL '6 hours' limit 5",
  );
  assert.equal(
    r("SELECT * FROM cpu WHERE '2026-01-01T00:00:00Z' <= time AND '2026-01-02' > time"),
    "SELECT * FROM cpu WHERE time >= now() - INTERVAL '1 hour' AND time <= now()",
  );
  assert.equal(
    r("SELECT * FROM cpu c WHERE ('2026-01-01'::timestamp < c.time) AND c.time <= now()"),
    "SELECT * FROM cpu c WHERE (c.time >= now() - INTERVAL '1 hour') AND c.time <= now()",
  );
  // Not a bound: left alone, a bound is added.
  assert.equal(
    r("SELECT time FROM cpu WHERE now() > time"),
    "SELECT time FROM cpu WHERE now() > time AND time >= now() - INTERVAL '1 hour'",
  );
});

test("keeps the upper-bound rewrite when a WHERE has to be inserted", () => {
  assert.equal(
    r("SELECT * FROM (SELECT * FROM cpu WHERE time < '2026-01-02') s ORDER BY 1"),
    "SELECT * FROM (SELECT * FROM cpu WHERE time <= now()) s WHERE time >= now() - INTERVAL '1 hour' ORDER BY 1",
  );
  assert.equal(
    r("SELECT * FROM (SELECT * FROM cpu WHERE '2026-01-02' >= time) s"),
    "SELECT * FROM (SELECT * FROM cpu WHERE time <= now()) s WHERE time >= now() - INTERVAL '1 hour'",
  );
});
