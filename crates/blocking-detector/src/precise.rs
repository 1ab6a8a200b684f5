//! Precise mode (`--cfg tokio_unstable`): tokio's before/after-task-poll
//! hooks time every task poll of the runtime, as if each task were watched.
//! Reports name the task id and the location of the `tokio::spawn` call.

use std::cell::Cell;

use tokio::runtime::TaskMeta;

use crate::activity::PollRecord;
use crate::detector::Shared;
use crate::report::TaskId;
use crate::runtime::with_thread;
use crate::watch::{SlowPoll, poll_was_slow};

/// The task poll in progress on this thread, between the two hooks.
#[derive(Clone, Copy)]
struct TaskPoll {
    detector: u64,
    record: PollRecord,
    /// The record to restore, and whether the thread ran the worker when the
    /// poll started; `None` if the thread is not bound.
    previous: Option<(PollRecord, bool)>,
}

thread_local! {
    static TASK_POLL: Cell<Option<TaskPoll>> = const { Cell::new(None) };
}

pub(crate) fn before_poll(shared: &Shared, meta: &TaskMeta<'_>) {
    if !shared.is_enabled() {
        return;
    }
    let start = shared.clock.now_ns();
    // The start figure of a poll that turns out slow, at most once per
    // quarter threshold (see `watch`).
    let _ = crate::runtime::THREAD.try_with(|s| {
        if start.saturating_sub(s.own_sample_at.get()) > shared.threshold_ns / 4 {
            crate::watch::sample_own(s, start);
        }
    });
    let record = PollRecord {
        start,
        name: None,
        location: Some(meta.spawned_at()),
        task_id: TaskId::from(meta.id()).as_u64(),
    };
    let previous = with_thread(shared, true, |w, t| {
        (t.activity.begin_poll(record), w.is_owner(t))
    });
    let _ = TASK_POLL.try_with(|c| {
        c.set(Some(TaskPoll {
            detector: shared.id,
            record,
            previous,
        }))
    });
}

pub(crate) fn after_poll(shared: &Shared, _meta: &TaskMeta<'_>) {
    // Runs even when disabled, so that a record published before the
    // detector was disabled is taken down.
    let Some(poll) = TASK_POLL.try_with(Cell::take).ok().flatten() else {
        return;
    };
    if poll.detector != shared.id {
        return;
    }
    let end = shared.clock.now_ns();
    // Another thread took the worker over during the poll: the task called
    // `block_in_place`, and the worker's other tasks ran on.
    let handed_over = poll.previous.is_some_and(|(_, owned)| {
        owned && with_thread(shared, false, |w, t| w.is_owner(t)) == Some(false)
    });
    // Reported before the record is taken down: whoever sees the poll over
    // (the watchdog, for a guard) finds the report made. tokio runs this hook
    // after the task's `JoinHandle` is told it finished, so a test may look
    // at its guard before this report is made; the guard then waits for the
    // watchdog to see the poll end.
    if !handed_over
        && shared.is_enabled()
        && end.saturating_sub(poll.record.start) >= shared.threshold_ns
    {
        poll_was_slow(
            shared,
            SlowPoll {
                start: poll.record.start,
                end,
                name: None,
                location: poll.record.location,
                task_id: TaskId::from_raw(poll.record.task_id),
            },
        );
    }
    if let Some((previous, _)) = poll.previous {
        with_thread(shared, false, |_, t| t.activity.end_poll(previous, end));
    }
}
