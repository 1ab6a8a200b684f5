//! A stand-in for a sync "legacy" library that the demo cannot change: it
//! reads sensor events and reports each one through a sync callback, on
//! whatever thread calls it — in the demo, from async tasks on the workers
//! of a per-core runtime, which is exactly where sync code must not block
//! carelessly.

use std::ops::Range;

/// Payloads of poison events start with this; the demo's gRPC server
/// rejects them as `INVALID_ARGUMENT` every time.
pub const POISON_PREFIX: &[u8] = b"poison";

/// One event as the library reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// Unique over the whole run.
    pub id: u64,
    /// Between 16 and 512 bytes; starts with [`POISON_PREFIX`] for a poison
    /// event.
    pub payload: Vec<u8>,
    /// The library cannot fill in this event's tag itself: the callback has
    /// to ask the (async) enrichment service.
    pub needs_enrichment: bool,
}

/// The sync library: give it a callback, then ask it to read events.
pub struct SensorLibrary {
    callback: Box<dyn FnMut(RawEvent) + Send>,
    seed: u64,
    poison_rate: f64,
}

impl SensorLibrary {
    /// A library instance whose payload sizes and poison events are drawn
    /// from `seed` (per event id, so the same ids give the same events
    /// whichever instance reads them); `poison_rate` is the share of poison
    /// events.
    pub fn new(
        seed: u64,
        poison_rate: f64,
        callback: impl FnMut(RawEvent) + Send + 'static,
    ) -> Self {
        SensorLibrary {
            callback: Box::new(callback),
            seed,
            poison_rate,
        }
    }

    /// Reads the events with ids `ids`, calling the callback once for each,
    /// synchronously, in id order.
    pub fn read(&mut self, ids: Range<u64>) {
        for id in ids {
            let event = self.event(id);
            (self.callback)(event);
        }
    }

    /// The event with this id: deterministic for a given seed.
    pub fn event(&self, id: u64) -> RawEvent {
        let draw = mix(self.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let fraction = (draw >> 11) as f64 / (1u64 << 53) as f64;
        let len = 16 + (draw % 497) as usize;
        let mut payload = Vec::with_capacity(len);
        if fraction < self.poison_rate {
            payload.extend_from_slice(POISON_PREFIX);
        }
        payload.extend_from_slice(format!("event {id};").as_bytes());
        payload.resize(len.max(payload.len()), b'.');
        RawEvent {
            id,
            payload,
            needs_enrichment: id % 10 == 3,
        }
    }
}

impl std::fmt::Debug for SensorLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorLibrary")
            .field("seed", &self.seed)
            .field("poison_rate", &self.poison_rate)
            .finish_non_exhaustive()
    }
}

/// SplitMix64's finaliser: a well-spread hash of a 64-bit value.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_deterministic_and_sized() {
        let lib = SensorLibrary::new(5, 0.0, |_| {});
        for id in 0..1000 {
            let e = lib.event(id);
            assert_eq!(e, lib.event(id));
            assert!((16..=512).contains(&e.payload.len()), "{}", e.payload.len());
            assert!(!e.payload.starts_with(POISON_PREFIX));
        }
    }

    #[test]
    fn poison_rate_is_roughly_respected() {
        let lib = SensorLibrary::new(9, 0.01, |_| {});
        let poison = (0..100_000)
            .filter(|id| lib.event(*id).payload.starts_with(POISON_PREFIX))
            .count();
        assert!((700..=1300).contains(&poison), "{poison}");
    }

    #[test]
    fn read_calls_back_in_order() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut lib = SensorLibrary::new(1, 0.0, move |e| tx.send(e.id).unwrap());
        lib.read(10..15);
        drop(lib);
        assert_eq!(rx.iter().collect::<Vec<_>>(), [10, 11, 12, 13, 14]);
    }
}
