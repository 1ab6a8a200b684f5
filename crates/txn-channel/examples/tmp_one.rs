// Throwaway measurement (not committed).
use async_patterns_txn_channel::channel;
use std::time::Instant;
#[derive(Clone, Copy, PartialEq, Debug)]
enum M {
    Guard,
    Batch,
    RecvMany,
}
fn run(rt: &tokio::runtime::Runtime, m: M, items: u64) -> f64 {
    let t = Instant::now();
    let sum = rt.block_on(async move {
        if m == M::RecvMany {
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let p = tokio::spawn(async move {
                for i in 0..items {
                    tx.send(i).await.unwrap();
                }
            });
            let c = tokio::spawn(async move {
                let mut s = 0u64;
                let mut buf = Vec::with_capacity(256);
                while rx.recv_many(&mut buf, 256).await > 0 {
                    s += buf.drain(..).sum::<u64>();
                }
                s
            });
            p.await.unwrap();
            return c.await.unwrap();
        }
        let (tx, mut rx) = channel(1024);
        let p = tokio::spawn(async move {
            for i in 0..items {
                tx.send(i).await.unwrap();
            }
        });
        let c = tokio::spawn(async move {
            let mut s = 0u64;
            if m == M::Guard {
                while let Some(d) = rx.begin().await {
                    s += d.commit();
                }
            } else {
                while let Some(b) = rx.begin_batch(256).await {
                    s += b.commit_all().sum::<u64>();
                }
            }
            s
        });
        p.await.unwrap();
        c.await.unwrap()
    });
    assert_eq!(sum, items * (items - 1) / 2);
    t.elapsed().as_secs_f64()
}
fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let items = 1_000_000;
    let ours = if mode == "guard" { M::Guard } else { M::Batch };
    if std::env::args().nth(2).as_deref() == Some("solo") {
        for _ in 0..10 {
            eprintln!("{:.1}", run(&rt, ours, items) * 1e3);
        }
        return;
    }
    let mut r = Vec::new();
    for i in 0..9 {
        let (o, a) = if i % 2 == 0 {
            let o = run(&rt, ours, items);
            (o, run(&rt, M::RecvMany, items))
        } else {
            let a = run(&rt, M::RecvMany, items);
            (run(&rt, ours, items), a)
        };
        r.push(a / o);
        eprintln!("{}", counts());
        eprintln!(
            "{:?} {:.1} ms recv_many {:.1} ms ratio {:.2}",
            ours,
            o * 1e3,
            a * 1e3,
            a / o
        );
    }
    r.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!("median {:.2} min {:.2} max {:.2}", r[4], r[0], r[8]);
}
#[allow(dead_code)]
fn counts() -> String {
    let c: Vec<u64> = async_patterns_txn_channel::TMPC
        .iter()
        .map(|c| c.swap(0, std::sync::atomic::Ordering::Relaxed))
        .collect();
    format!(
        "consumer looks-that-waited {} refills {} producer waits {}",
        c[0], c[1], c[2]
    )
}
