//! What the front ends have stored, counted once, where a write becomes
//! durable. `/metrics` and the console's status both read these counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sluice_engine::WriteBatch;

/// The ways rows come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    Http,
    Tcp,
    Mqtt,
    Kafka,
}

impl Frontend {
    pub const ALL: [Frontend; 4] = [
        Frontend::Http,
        Frontend::Tcp,
        Frontend::Mqtt,
        Frontend::Kafka,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Frontend::Http => "http",
            Frontend::Tcp => "tcp",
            Frontend::Mqtt => "mqtt",
            Frontend::Kafka => "kafka",
        }
    }
}

/// Cumulative counters of one front end.
#[derive(Default)]
pub struct FrontendCounters {
    /// Writes that stored rows (an HTTP request, a TCP chunk, a message
    /// batch).
    pub writes: AtomicU64,
    /// Rows in those writes.
    pub rows: AtomicU64,
    /// Lines or records refused as invalid (the valid rest was stored).
    pub rejected: AtomicU64,
    /// Writes that failed as a whole (engine refused or unavailable).
    pub failures: AtomicU64,
}

/// A plain copy of one front end's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontendTotals {
    pub writes: u64,
    pub rows: u64,
    pub rejected: u64,
    pub failures: u64,
}

pub struct IngestStats {
    frontends: [FrontendCounters; 4],
    /// Rows stored per database. Locked once per write, not per row.
    databases: Mutex<Option<HashMap<String, u64>>>,
}

pub static STATS: IngestStats = IngestStats {
    frontends: [
        FrontendCounters::new(),
        FrontendCounters::new(),
        FrontendCounters::new(),
        FrontendCounters::new(),
    ],
    databases: Mutex::new(None),
};

impl FrontendCounters {
    const fn new() -> Self {
        FrontendCounters {
            writes: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

/// The rows of a write, per database, taken before the write consumes it.
#[derive(Debug, Default)]
pub struct Tally {
    rows: u64,
    databases: Vec<(String, u64)>,
}

impl Tally {
    pub fn of(writes: &[(usize, WriteBatch)]) -> Self {
        let mut t = Tally::default();
        for (_, batch) in writes {
            for table in &batch.tables {
                let n = table.batch.num_rows() as u64;
                t.rows += n;
                match t.databases.iter_mut().find(|(d, _)| *d == table.database) {
                    Some((_, c)) => *c += n,
                    None => t.databases.push((table.database.clone(), n)),
                }
            }
        }
        t
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }
}

impl IngestStats {
    /// A write of `tally` is durable; `rejected` invalid lines were dropped
    /// from it. Retries are not failures: only the write that succeeded
    /// or the one that was given up on is counted.
    pub fn stored(&self, frontend: Frontend, tally: &Tally, rejected: usize) {
        let c = self.counters(frontend);
        if tally.rows > 0 {
            c.writes.fetch_add(1, Ordering::Relaxed);
        }
        c.rows.fetch_add(tally.rows, Ordering::Relaxed);
        c.rejected.fetch_add(rejected as u64, Ordering::Relaxed);
        if tally.databases.is_empty() {
            return;
        }
        let mut dbs = self
            .databases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dbs = dbs.get_or_insert_with(HashMap::new);
        for (db, n) in &tally.databases {
            match dbs.get_mut(db) {
                Some(c) => *c += n,
                None => {
                    dbs.insert(db.clone(), *n);
                }
            }
        }
    }

    /// A write that failed as a whole.
    pub fn failed(&self, frontend: Frontend) {
        self.counters(frontend)
            .failures
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn totals(&self, frontend: Frontend) -> FrontendTotals {
        let c = self.counters(frontend);
        FrontendTotals {
            writes: c.writes.load(Ordering::Relaxed),
            rows: c.rows.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }

    /// Rows stored per database, by name.
    pub fn databases(&self) -> Vec<(String, u64)> {
        let dbs = self
            .databases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<(String, u64)> =
            dbs.iter().flatten().map(|(d, n)| (d.clone(), *n)).collect();
        out.sort();
        out
    }

    fn counters(&self, frontend: Frontend) -> &FrontendCounters {
        &self.frontends[frontend as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_rows_add_up_per_front_end_and_database() {
        let stats = IngestStats {
            frontends: Default::default(),
            databases: Mutex::new(None),
        };
        let t = Tally {
            rows: 5,
            databases: vec![("a".into(), 3), ("b".into(), 2)],
        };
        stats.stored(Frontend::Mqtt, &t, 1);
        stats.stored(Frontend::Mqtt, &t, 0);
        stats.stored(Frontend::Mqtt, &Tally::default(), 2);
        stats.failed(Frontend::Tcp);
        let m = stats.totals(Frontend::Mqtt);
        assert_eq!((m.writes, m.rows, m.rejected, m.failures), (2, 10, 3, 0));
        assert_eq!(stats.totals(Frontend::Tcp).failures, 1);
        assert_eq!(stats.totals(Frontend::Http), FrontendTotals::default());
        assert_eq!(
            stats.databases(),
            vec![("a".to_string(), 6), ("b".to_string(), 4)]
        );
    }
}
