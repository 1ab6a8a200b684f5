//! With the `tracing` feature, `TracingHandler` (the default handler) emits
//! each report as a `WARN` event with the report's parts as fields.
#![cfg(feature = "tracing")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_patterns_blocking_detector::BlockingDetector;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// An event's level, target and `(name, value)` fields.
type Kept = (Level, String, Vec<(String, String)>);

/// Keeps every event.
#[derive(Clone, Default)]
struct Keep(Arc<Mutex<Vec<Kept>>>);

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
}

impl Subscriber for Keep {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let meta = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((*meta.level(), meta.target().to_string(), fields.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn the_default_handler_emits_a_warn_event_per_report() {
    let keep = Keep::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tracing::subscriber::with_default(keep.clone(), || {
        let detector = BlockingDetector::builder()
            .threshold(Duration::from_millis(20))
            .build()
            .unwrap();
        rt.block_on(async {
            detector
                .spawn("traced", async {
                    std::thread::sleep(Duration::from_millis(50))
                })
                .await
                .unwrap();
        });
    });
    let events = keep.0.lock().unwrap();
    assert_eq!(events.len(), 1);
    let (level, target, fields) = &events[0];
    assert_eq!(*level, Level::WARN);
    assert_eq!(target, "async_patterns_blocking_detector");
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no field {name} in {fields:?}"))
    };
    assert_eq!(field("kind"), "blocked");
    assert_eq!(field("task.name"), "\"traced\"");
    assert!(field("location").contains("tracing.rs"));
    assert!(field("duration_ms").parse::<u64>().unwrap() >= 45);
    assert!(field("message").contains("task \"traced\""));
    // What kept the thread: asleep, so off the CPU (on Linux, where the
    // figures can be read).
    if cfg!(target_os = "linux") {
        assert_eq!(field("class"), "blocked");
        let off: u64 = field("off_cpu_ms").parse().unwrap();
        let on: u64 = field("on_cpu_ms").parse().unwrap();
        assert!(off > on, "{fields:?}");
        field("run_queue_ms").parse::<u64>().unwrap();
        field("measured_ms").parse::<u64>().unwrap();
    }
}
