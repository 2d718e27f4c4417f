//! The system clock stepping back under a running sidecar (an NTP correction after a boot with
//! the clock ahead). libfaketime moves the sidecar's wall clock only (its monotonic clock, and
//! so its timers, keep running), from an offset file the test rewrites.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;

/// Debian's `faketime` package (`.ci/run` installs it).
fn libfaketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|arch| arch.path().join("faketime/libfaketimeMT.so.1"))
        .find(|lib| lib.exists())
        .expect("libfaketime: install Debian's faketime package (.ci/run does)")
}

/// A backlog waiting for its host's one slot when the clock steps back an hour is still due:
/// it is delivered at once, not an hour later.
#[tokio::test]
async fn a_clock_step_back_does_not_hold_the_queued_deliveries() {
    let receiver = Receiver::start(Arc::new(|_, _| Reply::Stall(Duration::from_millis(300)))).await;
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let lib = libfaketime();
    let sidecar = Sidecar::start_with_env(
        "[delivery]\nper_host_concurrency = 1\n",
        &[
            ("LD_PRELOAD", lib.to_str().unwrap()),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
    .await;
    for i in 0..4 {
        let (status, v) = sidecar
            .send(&receiver.url(&format!("/backlog/{i}")), "{}", None)
            .await;
        assert_eq!(status, 202, "{v}");
    }
    // The first is at the receiver (answered in 300 ms); the other three wait for the slot.
    receiver.wait_count(1).await;
    std::fs::write(&offset, "-1h\n").unwrap();
    // Within the harness's 30 s deadline, not an hour.
    receiver.wait_count(4).await;
    wait_for("the step to be logged", || async {
        sidecar
            .log()
            .contains("the system clock stepped back")
            .then_some(())
    })
    .await;
}
