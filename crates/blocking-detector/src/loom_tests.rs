//! Loom models of the lock-free thread record the watchdog reads while the
//! thread writes it: a reader sees a whole record or none, never a mix of two
//! writes, and a parked flag is never seen without the time it was set at.

use std::panic::Location;

use crate::activity::{Activity, PollRecord};
use loom::sync::Arc;
use loom::thread;

fn record(start: u64, name: &'static str, task_id: u64) -> PollRecord {
    PollRecord {
        start,
        name: Some(name),
        location: Some(Location::caller()),
        task_id,
    }
}

#[test]
fn a_reader_sees_a_whole_record_or_none_while_a_nested_poll_comes_and_goes() {
    loom::model(|| {
        let activity = Arc::new(Activity::new());
        let outer = record(1, "outer", 10);
        activity.begin_poll(outer);
        let writer = {
            let activity = activity.clone();
            thread::spawn(move || {
                let saved = activity.begin_poll(record(2, "a longer name", 20));
                activity.end_poll(saved, 3);
            })
        };
        if let Some(seen) = activity.snapshot().record {
            let whole = seen == outer
                || (seen.start == 2 && seen.name == Some("a longer name") && seen.task_id == 20);
            assert!(whole, "torn record: {seen:?}");
        }
        writer.join().unwrap();
        let after = activity.snapshot();
        assert_eq!(after.record, Some(outer));
        assert_eq!(after.progress_at, 3);
    });
}

#[test]
fn a_parked_thread_is_seen_with_the_time_it_parked() {
    loom::model(|| {
        let activity = Arc::new(Activity::new());
        let writer = {
            let activity = activity.clone();
            thread::spawn(move || {
                activity.unpark(5);
                activity.park(6);
            })
        };
        let seen = activity.snapshot();
        if seen.parked {
            assert_eq!(seen.progress_at, 6);
        } else {
            assert!([0, 5, 6].contains(&seen.progress_at), "{seen:?}");
        }
        writer.join().unwrap();
        assert!(activity.snapshot().parked);
    });
}
