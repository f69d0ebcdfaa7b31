//! The feed-refresh hook of the watch loop (`watch::FeedTimer`), run in
//! process inside a network namespace: called on its interval, after a new
//! ruleset loaded and when a local feed file changes, with the last policy
//! that loaded; a failing
//! refresh does not stop the service. Its own test binary, because stopping
//! the loop means sending this process SIGTERM.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use common::*;
use phantomc::nft::Nft;
use phantomc::watch::{FeedTimer, Health, Options, Service};

/// What the hook saw on each call: the feeds of the policy it was given.
type Calls = Arc<Mutex<Vec<Vec<String>>>>;

fn start(ns: &Netns, policy: &Path, every: Duration, fail_first: bool) -> (Calls, std::thread::JoinHandle<()>) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let refresh = Box::new(move |_: &Nft, c: &phantomc::ir::Compiled| {
        let mut seen = seen.lock().expect("calls");
        seen.push(c.ruleset.feeds.iter().map(|f| f.name.clone()).collect());
        if fail_first && seen.len() == 1 {
            return Err("feed server unreachable".to_string());
        }
        Ok(())
    });
    let opts = Options {
        policy: policy.to_path_buf(),
        debounce: Duration::from_millis(50),
        state_file: policy.with_file_name("health.json"),
        feed_state_dir: Some(policy.with_file_name("state")),
        nft: Nft::default(),
        recheck: Duration::from_secs(30),
    };
    let handle = ns.spawn(move || {
        let health = Arc::new(RwLock::new(Health::default()));
        Service::new(opts, health, Some(FeedTimer { every, refresh })).run().expect("watch loop");
    });
    (calls, handle)
}

fn stop(handle: std::thread::JoinHandle<()>) {
    // SAFETY: kill(2) on this very process; the watch loop handles SIGTERM.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    handle.join().expect("the watch loop stops cleanly on SIGTERM");
}

fn loaded(policy: &Path) -> bool {
    phantomc::watch::read_health(&policy.with_file_name("health.json")).is_ok_and(|h| h.reloads >= 1)
}

#[test]
fn the_feed_hook_runs_on_its_timer_and_on_local_feed_changes() {
    require_tools();
    let ns = Netns::new("feedhook");
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.pf");
    std::fs::write(dir.path().join("drop.txt"), "192.0.2.0/24\n").unwrap();
    std::fs::write(&policy, "pass in on lo\nfeed drop { source \"drop.txt\"; format plain }\nblock in from <drop>\n")
        .unwrap();

    // A timer that never fires in this test: the first load and the feed file call the hook.
    let (calls, handle) = start(&ns, &policy, Duration::from_secs(3600), false);
    eventually("policy loaded", || loaded(&policy));
    eventually("hook called once the ruleset is loaded", || calls.lock().unwrap().len() == 1);
    std::fs::write(dir.path().join("drop.txt"), "198.51.100.0/24\n").unwrap();
    eventually("hook called for the changed feed file", || calls.lock().unwrap().len() == 2);
    assert_eq!(calls.lock().unwrap()[1], ["drop"], "the hook gets the loaded policy");
    // A new feed in the policy: the ruleset reloads and the hook sees both feeds.
    let mut text = std::fs::read_to_string(&policy).unwrap();
    text.push_str("feed tor { source \"https://example.net/tor.txt\"; format plain }\nblock in from <tor>\n");
    std::fs::write(&policy, text).unwrap();
    eventually("hook called for the new ruleset", || calls.lock().unwrap().len() == 3);
    assert_eq!(calls.lock().unwrap()[2], ["drop", "tor"]);
    stop(handle);

    // A fast timer whose first refresh fails: the loop goes on calling it.
    std::fs::remove_file(dir.path().join("health.json")).unwrap();
    let (calls, handle) = start(&ns, &policy, Duration::from_millis(100), true);
    eventually("policy loaded", || loaded(&policy));
    eventually("timer calls after a failed refresh", || calls.lock().unwrap().len() >= 3);
    stop(handle);
    let after = calls.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(calls.lock().unwrap().len(), after, "no refresh after the service stopped");
    assert!(
        stdout(&ns.nft(&["list", "set", "inet", "phantomc", "drop_v4"])).contains("set drop_v4"),
        "the table stays loaded"
    );
}
