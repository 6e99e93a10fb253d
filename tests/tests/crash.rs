//! Durability: a write acknowledged by Sluice survives SIGKILL at any moment,
//! complete and exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use sluice_tests::TestServer;

const LINES_PER_BATCH: usize = 200;

fn batch_body(writer: usize, batch: usize) -> String {
    let mut s = String::with_capacity(LINES_PER_BATCH * 64);
    for i in 0..LINES_PER_BATCH {
        let ts = 1_600_000_000_000_000_000i64 + ((writer * 10_000_000 + batch * 1_000 + i) as i64);
        s.push_str(&format!(
            "t,writer=w{writer},host=h{} batch={batch}i,line={i}i {ts}\n",
            i % 16
        ));
    }
    s
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    let mut s = TestServer::start();
    let mut rng = rand::thread_rng();
    let mut acked: HashMap<(usize, usize), ()> = HashMap::new();
    let mut next_batch = [0usize; 3];
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (w, start) in next_batch.iter().copied().enumerate() {
            let (stop, done, url) = (stop.clone(), done.clone(), s.url("/write?db=crash"));
            threads.push(std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut b = start;
                while !stop.load(Ordering::Relaxed) {
                    match client.post(&url).body(batch_body(w, b)).send() {
                        Ok(r) if r.status().as_u16() == 204 => done.lock().unwrap().push((w, b)),
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        Err(_) => break, // the server is gone
                    }
                    b += 1;
                }
                b
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1500)));
        s.kill9();
        stop.store(true, Ordering::Relaxed);
        for (w, t) in threads.into_iter().enumerate() {
            // Batches in flight at the kill may or may not have landed; never reuse their ids.
            next_batch[w] = t.join().unwrap() + 1;
        }
        for k in done.lock().unwrap().iter() {
            acked.insert(*k, ());
        }
        assert!(
            !acked.is_empty(),
            "round {round}: nothing was acknowledged before the kill"
        );
        s.restart();
        let rows = s.rows(
            "crash",
            "SELECT writer, batch, count(*), count(DISTINCT line) FROM t GROUP BY writer, batch",
        );
        let mut found: HashMap<(usize, usize), (i64, i64)> = HashMap::new();
        for r in rows {
            let w: usize = r[0].as_str().unwrap()[1..].parse().unwrap();
            let b = r[1].as_i64().unwrap() as usize;
            found.insert((w, b), (r[2].as_i64().unwrap(), r[3].as_i64().unwrap()));
        }
        for k in acked.keys() {
            let got = found.get(k).copied();
            assert_eq!(
                got,
                Some((LINES_PER_BATCH as i64, LINES_PER_BATCH as i64)),
                "round {round}: acknowledged batch {k:?} is missing or incomplete"
            );
        }
        for (k, (n, distinct)) in &found {
            assert_eq!(n, distinct, "batch {k:?} has duplicated lines");
        }
        eprintln!(
            "round {round}: {} batches acknowledged so far, {} present after restart",
            acked.len(),
            found.len()
        );
    }
}
