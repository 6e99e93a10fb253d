//! Query-side counters, exported on `/metrics`.

use std::sync::atomic::AtomicU64;

pub struct QueryMetrics {
    /// Chunks whose rows an aggregate took from footer statistics.
    pub chunks_from_stats: AtomicU64,
    /// Chunks decoded (some or all pages) by scans.
    pub chunks_decoded: AtomicU64,
    pub queries: AtomicU64,
    /// Statements about one relational row by its key, run without a plan.
    pub point_statements: AtomicU64,
}

pub static METRICS: QueryMetrics = QueryMetrics {
    chunks_from_stats: AtomicU64::new(0),
    chunks_decoded: AtomicU64::new(0),
    queries: AtomicU64::new(0),
    point_statements: AtomicU64::new(0),
};
