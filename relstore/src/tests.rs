use super::*;
use crate::fuzzing::accounts;
use crate::schema::TableDef;
use crate::value::{encode_key, Value};

fn start(dir: &std::path::Path) -> RelStore {
    RelStore::start(&RelConfig {
        dir: dir.join("meta"),
        io_memory: 1 << 20,
        min_free_bytes: 0,
    })
    .unwrap()
}

fn row(id: i64, owner: &str, balance: i64) -> Vec<Value> {
    vec![
        Value::Int(id),
        Value::Text(owner.into()),
        Value::Int(balance),
    ]
}

fn pk(id: i64) -> Vec<u8> {
    encode_key(&[&Value::Int(id)])
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// Creates `accounts` with ann's and bob's 100 each.
fn ann_and_bob(h: &RelHandle) -> (Arc<RelCatalog>, Arc<TableDef>) {
    block(h.ddl(DdlOp::CreateTable(accounts()))).unwrap();
    let cat = h.catalog();
    let t = cat.table("public", "accounts").unwrap().clone();
    let mut tx = h.begin(false).unwrap();
    tx.insert(&cat, &t, row(1, "ann", 100), OnConflict::Error)
        .unwrap();
    tx.insert(&cat, &t, row(2, "bob", 100), OnConflict::Error)
        .unwrap();
    block(h.commit(tx)).unwrap();
    (cat, t)
}

#[test]
fn commits_survive_restart_and_conflicts_abort() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = start(dir.path());
        let h = store.handle();
        let (cat, t) = ann_and_bob(&h);
        let mut tx = h.begin(false).unwrap();
        let dup = tx.insert(&cat, &t, row(3, "ann", 5), OnConflict::Error);
        assert!(
            matches!(dup, Err(RelError::UniqueViolation { .. })),
            "{dup:?}"
        );

        // Two transactions read the same row and both write it: the second
        // to commit must fail, and change nothing.
        let mut a = h.begin(false).unwrap();
        let mut b = h.begin(false).unwrap();
        let ra = a.get(&t, &pk(1)).unwrap().unwrap();
        let rb = b.get(&t, &pk(1)).unwrap().unwrap();
        assert_eq!(ra, rb);
        a.update(&cat, &t, &pk(1), row(1, "ann", 90)).unwrap();
        b.update(&cat, &t, &pk(1), row(1, "ann", 80)).unwrap();
        block(h.commit(a)).unwrap();
        let err = block(h.commit(b)).unwrap_err();
        assert_eq!(err.sqlstate(), "40001", "{err}");

        // Write skew: each reads both rows and writes the other one.
        let mut a = h.begin(false).unwrap();
        let mut b = h.begin(false).unwrap();
        for tx in [&mut a, &mut b] {
            tx.get(&t, &pk(1)).unwrap();
            tx.get(&t, &pk(2)).unwrap();
        }
        a.update(&cat, &t, &pk(1), row(1, "ann", 0)).unwrap();
        b.update(&cat, &t, &pk(2), row(2, "bob", 0)).unwrap();
        block(h.commit(a)).unwrap();
        assert_eq!(block(h.commit(b)).unwrap_err().sqlstate(), "40001");

        // Two inserts of the same unique value from concurrent transactions.
        let mut a = h.begin(false).unwrap();
        let mut b = h.begin(false).unwrap();
        a.insert(&cat, &t, row(5, "cy", 1), OnConflict::Error)
            .unwrap();
        b.insert(&cat, &t, row(6, "cy", 1), OnConflict::Error)
            .unwrap();
        block(h.commit(a)).unwrap();
        assert_eq!(block(h.commit(b)).unwrap_err().sqlstate(), "40001");
    }
    let store = start(dir.path());
    let h = store.handle();
    let cat = h.catalog();
    let t = cat.table("public", "accounts").unwrap().clone();
    let mut tx = h.begin(true).unwrap();
    let rows: Vec<_> = tx.scan(&t).unwrap().into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        rows,
        vec![row(1, "ann", 0), row(2, "bob", 100), row(5, "cy", 1)]
    );
    let ix = t.indexes[0].clone();
    let found = tx
        .index_lookup(&t, &ix, &[Value::Text("bob".into())])
        .unwrap();
    assert_eq!(found.len(), 1);
}

#[test]
fn sequences_never_repeat_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let store = start(dir.path());
        let h = store.handle();
        if h.catalog().sequence("public", "s").is_none() {
            block(h.ddl(DdlOp::CreateSequence(crate::schema::SequenceDef {
                id: 0,
                schema: "public".into(),
                name: "s".into(),
                increment: 1,
                min: 1,
                max: i64::MAX,
                start: 1,
                cycle: false,
            })))
            .unwrap();
        }
        let id = h.catalog().sequence("public", "s").unwrap().id;
        for _ in 0..40 {
            seen.push(block(h.nextval(id)).unwrap());
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len());
    assert_eq!(&seen[..40], &(1..=40).collect::<Vec<_>>()[..]);
}

/// Two writers of one row: the second waits for the first's lock, then
/// moves its snapshot forward and commits on top of the first, where
/// without locks it would fail at commit.
#[test]
fn row_locks_queue_writers_and_detect_deadlocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = start(dir.path());
    let h = store.handle();
    let (cat, t) = ann_and_bob(&h);

    let a = Arc::new(Mutex::new(h.begin(false).unwrap()));
    let b = Arc::new(Mutex::new(h.begin(false).unwrap()));
    // `a` reads, locks and writes row 1.
    a.lock().get(&t, &pk(1)).unwrap();
    assert!(!block(h.lock_rows(&a, t.id, &[pk(1)])).unwrap());
    a.lock()
        .update(&cat, &t, &pk(1), row(1, "ann", 90))
        .unwrap();
    // `b` read row 1 in the same snapshot; its lock waits for `a`.
    b.lock().begin_statement();
    b.lock().get(&t, &pk(1)).unwrap();
    let (h2, b2) = (h.clone(), b.clone());
    let tid = t.id;
    let waiter = std::thread::spawn(move || block(h2.lock_rows(&b2, tid, &[pk(1)])));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!waiter.is_finished(), "the second writer did not wait");
    let a_txn = a.lock().take();
    block(h.commit(a_txn)).unwrap();
    // Woken, `b` refreshed: it must run its statement again and sees 90.
    assert!(waiter.join().unwrap().unwrap());
    let now = b.lock().get(&t, &pk(1)).unwrap().unwrap();
    assert_eq!(now, row(1, "ann", 90));
    b.lock()
        .update(&cat, &t, &pk(1), row(1, "ann", 80))
        .unwrap();
    let b_txn = b.lock().take();
    block(h.commit(b_txn)).unwrap();
    let mut check = h.begin(true).unwrap();
    assert_eq!(check.get(&t, &pk(1)).unwrap().unwrap(), row(1, "ann", 80));

    // Opposite lock orders: the wait that closes the cycle fails at once.
    let a = Arc::new(Mutex::new(h.begin(false).unwrap()));
    let b = Arc::new(Mutex::new(h.begin(false).unwrap()));
    block(h.lock_rows(&a, t.id, &[pk(1)])).unwrap();
    block(h.lock_rows(&b, t.id, &[pk(2)])).unwrap();
    let (h2, a2) = (h.clone(), a.clone());
    let waiter = std::thread::spawn(move || block(h2.lock_rows(&a2, tid, &[pk(2)])));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let err = block(h.lock_rows(&b, t.id, &[pk(1)])).unwrap_err();
    assert_eq!(err.sqlstate(), "40P01", "{err}");
    // `b` gives up; `a` gets its lock.
    drop(b.lock().take());
    waiter.join().unwrap().unwrap();
}
