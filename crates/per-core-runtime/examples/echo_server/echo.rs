//! The echo server of the `echo_server` example in its two builds — one
//! `SO_REUSEPORT` listener per worker of a `PerCoreRuntime`, and one listener
//! on tokio's multi-thread runtime — and the load generator that measures
//! them. The `per_core_runtime` benchmark includes this file, so the numbers
//! in `docs/benchmarks.md` are this code's.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_patterns_per_core_runtime::{Handle, JoinHandle, PerCoreRuntime};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A listening socket with `SO_REUSEPORT`, so that several of them (one per
/// worker) can share `addr`; the kernel spreads connections over them.
pub(crate) fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Starts the per-core server: one listener per worker, all on one port
/// (`addr`'s, or a free one if it is 0), each accepting and serving its
/// connections on its own worker. Returns the address and the accept loops.
pub(crate) fn serve_per_core(
    rt: &PerCoreRuntime,
    addr: SocketAddr,
) -> io::Result<(SocketAddr, Vec<JoinHandle<io::Result<()>>>)> {
    let first = reuseport_listener(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..rt.workers() {
        listeners.push(reuseport_listener(addr)?);
    }
    let mut accept_loops = Vec::with_capacity(listeners.len());
    for (worker, listener) in listeners.into_iter().enumerate() {
        let accept_loop = rt
            .spawn_on(worker, move || accept_per_core(listener))
            .map_err(|e| io::Error::other(e.to_string()))?;
        accept_loops.push(accept_loop);
    }
    Ok((addr, accept_loops))
}

async fn accept_per_core(listener: std::net::TcpListener) -> io::Result<()> {
    // Registered with this worker's I/O driver: its connections stay here.
    let listener = TcpListener::from_std(listener)?;
    let runtime = Handle::current().expect("accept loops run on a worker");
    loop {
        let (stream, _) = tokio::select! {
            // Stop accepting at shutdown; open connections are drained.
            _ = runtime.shutting_down() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        stream.set_nodelay(true)?;
        // Counted, and waited for by a graceful shutdown.
        if let Err(refused) = PerCoreRuntime::spawn_local(echo(stream)) {
            return Err(io::Error::other(refused.to_string()));
        }
    }
}

/// Starts the same server on the current (multi-thread) tokio runtime: one
/// listener, one `tokio::spawn`ed task per connection.
pub(crate) async fn serve_multi_thread(
    addr: SocketAddr,
) -> io::Result<(SocketAddr, tokio::task::JoinHandle<io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let accept_loop = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(echo(stream));
        }
    });
    Ok((addr, accept_loop))
}

/// Echoes everything back until the client closes; returns the bytes echoed.
async fn echo(mut stream: TcpStream) -> io::Result<u64> {
    let mut buf = vec![0; 4096];
    let mut echoed = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(echoed);
        }
        stream.write_all(&buf[..n]).await?;
        echoed += n as u64;
    }
}

/// Opens `connections` connections to `addr` and sends `messages` messages
/// of `size` bytes on each, one at a time, waiting for each echo. Returns
/// every round trip's latency. Runs on the caller's tokio runtime.
pub(crate) async fn run_clients(
    addr: SocketAddr,
    connections: usize,
    messages: usize,
    size: usize,
) -> io::Result<Vec<Duration>> {
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        clients.spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let request = vec![7_u8; size];
            let mut reply = vec![0_u8; size];
            let mut latencies = Vec::with_capacity(messages);
            for _ in 0..messages {
                let start = Instant::now();
                stream.write_all(&request).await?;
                stream.read_exact(&mut reply).await?;
                latencies.push(start.elapsed());
            }
            io::Result::Ok(latencies)
        });
    }
    let mut all = Vec::with_capacity(connections * messages);
    while let Some(client) = clients.join_next().await {
        all.extend(client.map_err(io::Error::other)??);
    }
    Ok(all)
}

/// The `p`-th percentile (0–100) of `latencies`, which this sorts.
pub(crate) fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let rank = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
    latencies[rank.min(latencies.len() - 1)]
}
