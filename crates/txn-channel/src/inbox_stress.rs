//! Stress tests of the [`Inbox`](crate::inbox::Inbox) on real threads, for miri
//! (`cargo xtask ci`'s miri section runs them under several scheduler
//! seeds, with sizes cut down): its unsafe code — slots written by one
//! thread and read by another, segments allocated by whichever sender comes
//! first, values dropped with the inbox — under concurrent senders, a
//! drainer, listening, a full ring and a close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread;

use crate::inbox::{Inbox, Push, used_of};

/// Values each sender sends.
const PER_SENDER: u32 = if cfg!(miri) { 40 } else { 20_000 };
const SENDERS: u32 = 3;

/// Sends `PER_SENDER` values (`sender << 16 | i`, as strings: values that
/// own memory), retrying while the ring is full; the number it sent. With
/// `slots`, each value takes one of that many capacity slots with its claim
/// ([`Inbox::send`]), retrying while none is free; without, the sender
/// holds its slots already ([`Inbox::push`]).
fn send_all(inbox: &Inbox<String>, sender: u32, slots: Option<usize>) -> u32 {
    for i in 0..PER_SENDER {
        let mut value = format!("{}", (sender << 16) | i);
        loop {
            let key = u64::from(sender);
            let pushed = match slots {
                Some(capacity) => inbox.send(value, key, capacity),
                None => inbox.push(value, key),
            };
            match pushed {
                Push::Queued { .. } => break,
                Push::NoSlot(back) | Push::Full(back) => {
                    value = back;
                    thread::yield_now();
                }
                Push::Closed(_) => return i,
            }
        }
    }
    PER_SENDER
}

/// Checks that `out` holds each sender's values in the order it sent them,
/// each once, and returns how many each sent.
fn check_order(out: &[(String, u64)]) -> Vec<u32> {
    let mut next = vec![0_u32; SENDERS as usize];
    for (value, key) in out {
        let n: u32 = value.parse().expect("a number");
        let sender = n >> 16;
        assert_eq!(u64::from(sender), *key, "a value keeps its key");
        assert_eq!(n & 0xffff, next[sender as usize], "sender {sender}'s order");
        next[sender as usize] += 1;
    }
    next
}

#[test]
fn stress_senders_and_a_listening_drainer_keep_every_value_once_and_in_order() {
    // A small ring: senders come round it, and find it full, often.
    let inbox = Arc::new(Inbox::<String>::new(4));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let inbox = inbox.clone();
            thread::spawn(move || send_all(&inbox, sender, None))
        })
        .collect();
    let mut head = 0;
    let mut out = Vec::new();
    let total = (SENDERS * PER_SENDER) as usize;
    let mut looks = 0_u32;
    while out.len() < total {
        if inbox.drain(&mut head, |v, k| out.push((v, k))) == 0 {
            looks += 1;
            // Listen now and then: a listen that finds a value claimed
            // waits for it to be written.
            if looks.is_multiple_of(8) && inbox.listen(head) {
                assert_ne!(inbox.drain(&mut head, |v, k| out.push((v, k))), 0);
            }
            // And drain up to what is claimed now while the senders go on
            // (as a value queued under the channel's lock does): it stops
            // there.
            if looks.is_multiple_of(5) {
                let upto = inbox.claimed();
                inbox.drain_to(&mut head, upto, |v, k| out.push((v, k)));
                assert_eq!(head, upto);
            }
            thread::yield_now();
        }
    }
    for sender in senders {
        assert_eq!(sender.join().unwrap(), PER_SENDER);
    }
    assert_eq!(check_order(&out), vec![PER_SENDER; SENDERS as usize]);
}

#[test]
fn stress_a_close_racing_senders_drains_everything_it_accepted() {
    let inbox = Arc::new(Inbox::<String>::new(64));
    let go = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (inbox, go) = (inbox.clone(), go.clone());
            thread::spawn(move || {
                while !go.load(SeqCst) {
                    thread::yield_now();
                }
                send_all(&inbox, sender, None)
            })
        })
        .collect();
    let mut head = 0;
    let mut out = Vec::new();
    go.store(true, SeqCst);
    // Drain a little while they send, then close mid-stream.
    for _ in 0..3 {
        inbox.drain(&mut head, |v, k| out.push((v, k)));
        thread::yield_now();
    }
    let claimed = inbox.close();
    inbox.drain_to(&mut head, claimed, |v, k| out.push((v, k)));
    let sent: Vec<u32> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    // Every value a sender was told is queued came out, in order; nothing
    // after the close.
    assert_eq!(check_order(&out), sent);
    assert_eq!(inbox.drain(&mut head, |_, _| {}), 0);
}

#[test]
fn stress_values_left_in_the_inbox_are_dropped_with_it() {
    let inbox = Arc::new(Inbox::<String>::new(256));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let inbox = inbox.clone();
            thread::spawn(move || {
                for i in 0..PER_SENDER.min(50) {
                    let queued = inbox.push(format!("{sender}:{i}"), 0);
                    assert!(matches!(queued, Push::Queued { .. }), "room for all");
                }
            })
        })
        .collect();
    // Take some, leave the rest (and segments allocated by any sender) to
    // the inbox's drop: miri reports a leak or a double drop.
    let mut head = 0;
    let mut taken = 0;
    inbox.drain(&mut head, |_, _| taken += 1);
    for sender in senders {
        sender.join().unwrap();
    }
    drop(inbox);
}

#[test]
fn stress_senders_taking_slots_with_their_claims_never_exceed_the_capacity() {
    const CAPACITY: usize = 8;
    let inbox = Arc::new(Inbox::<String>::new(CAPACITY));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let inbox = inbox.clone();
            thread::spawn(move || send_all(&inbox, sender, Some(CAPACITY)))
        })
        .collect();
    let mut head = 0;
    let mut out = Vec::new();
    let total = (SENDERS * PER_SENDER) as usize;
    while out.len() < total {
        let drained = inbox.drain(&mut head, |v, k| out.push((v, k)));
        let used = used_of(inbox.word());
        assert!(used <= CAPACITY, "{used} slots in use of {CAPACITY}");
        // What was drained is "committed": its slots go back.
        inbox.give_slots(drained);
        if drained == 0 {
            thread::yield_now();
        }
    }
    for sender in senders {
        assert_eq!(sender.join().unwrap(), PER_SENDER);
    }
    assert_eq!(check_order(&out), vec![PER_SENDER; SENDERS as usize]);
    assert_eq!(used_of(inbox.word()), 0);
}
