//! A full disk, for real: the data directory on a small ext4 file system
//! (a loop device), filled up to Sluice's reserve while points keep coming.
//! Writes are refused with HTTP 507 and say why, nothing acknowledged is
//! lost, queries keep working, and ingest resumes by itself when space is
//! freed. Needs root, for the loop mount.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_tests::TestServer;

const RESERVE: u64 = 16 << 20;

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed (this test needs root and loop devices): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An ext4 file system of `mib` MiB mounted at `at`, unmounted on drop.
struct LoopFs {
    at: PathBuf,
}

impl LoopFs {
    fn new(image: &Path, at: &Path, mib: u64) -> LoopFs {
        let f = std::fs::File::create(image).unwrap();
        f.set_len(mib << 20).unwrap();
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image));
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(at));
        LoopFs {
            at: at.to_path_buf(),
        }
    }

    fn free(&self) -> u64 {
        let out = sh(Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.at));
        out.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn batch(from: u64, n: u64) -> String {
    (from..from + n)
        .map(|k| {
            format!(
                "fill,host=h{} seq={k}i,pad=\"{}\" {}\n",
                k % 4,
                "x".repeat(200),
                1_700_000_000_000_000_000 + k as i64
            )
        })
        .collect()
}

#[test]
fn a_full_disk_refuses_writes_loses_nothing_and_recovers_by_itself() {
    let outer = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let fs = LoopFs::new(&outer.path().join("disk.img"), mnt.path(), 160);
    let data_parent = tempfile::TempDir::new_in(mnt.path()).unwrap();
    let reserve = RESERVE.to_string();
    let mut s = TestServer::start_in(
        data_parent,
        &[("SLUICE_STORAGE__MIN_FREE_BYTES", reserve.as_str())],
    );
    assert_eq!(s.write("plant", &batch(0, 10)).status(), 204);
    // Leave a little more than the reserve free.
    let filler = mnt.path().join("filler");
    let take = fs.free().saturating_sub(RESERVE + (6 << 20));
    sh(Command::new("fallocate")
        .args(["-l", &take.to_string()])
        .arg(&filler));

    let mut acked = 10u64;
    let mut refused = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let r = s.write("plant", &batch(acked, 200));
        match r.status().as_u16() {
            204 => acked += 200,
            status => {
                refused = Some((status, r.text().unwrap()));
                break;
            }
        }
    }
    let (status, body) = refused.expect("writes went on past the reserve");
    eprintln!(
        "refused after {acked} points with {} bytes free: {body}",
        fs.free()
    );
    assert_eq!(status, 507, "{body}");
    assert!(
        body.contains("bytes free") && body.contains("reserve"),
        "{body}"
    );
    // Reads go on while writes are refused, and see every acknowledged point.
    // Each shard checks the disk when it proposes its part, so the refused
    // batch may be stored on a shard that checked before the reserve was
    // crossed; the retry below rewrites the same points (dedup by time).
    let seen = s.count("plant", "fill");
    assert!(
        (acked as i64..=acked as i64 + 200).contains(&seen),
        "{seen} points seen, {acked} acknowledged"
    );
    assert!(s.metric("sluice_disk_full_rejections_total") >= 1.0);
    assert!(s.log().contains("disk nearly full"), "{}", s.log());

    // Space comes back: writes resume without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.write("plant", &batch(acked, 200));
        if r.status() == 204 {
            acked += 200;
            break;
        }
        assert_eq!(r.status(), 507);
        assert!(
            Instant::now() < deadline,
            "writes did not resume once space was freed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(s.log().contains("disk space is back"), "{}", s.log());

    // And everything acknowledged survives a kill.
    s.kill9();
    s.restart();
    assert_eq!(s.count("plant", "fill"), acked as i64);
    s.kill9();
    drop(s);
    drop(fs);
}
