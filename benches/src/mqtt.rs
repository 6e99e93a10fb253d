//! The MQTT loader: publishes TSBS cpu-only line protocol, N lines per
//! message, over several MQTT connections, and times publish → acknowledged.
//!
//! What "acknowledged" means depends on the QoS: at QoS 1 a connection is done
//! when the broker has sent a PUBACK for every message it published (for
//! Sluice, that is when the rows are fsync'd); at QoS 0 there is no answer, so
//! it is done when its last PUBLISH has been written to the socket.
//!
//! With `--subscribe`, one more connection subscribes to the topic before the
//! clock starts and counts what the broker delivers, which is how a plain
//! broker (mosquitto) is measured: from the first publish to the last message
//! received.
//!
//! As in `load`, every payload is generated before the clock starts; during
//! the timed section the client only hands ready-made buffers to rumqttc.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS,
    SubscribeReasonCode,
};

use crate::generate::{Rows, Values};
use crate::load::self_cpu_seconds;

pub struct MqttArgs {
    /// host:port.
    pub broker: String,
    pub topic: String,
    /// 0 or 1 (clap checks).
    pub qos: u8,
    pub connections: usize,
    pub inflight: u16,
    pub lines: usize,
    pub messages: usize,
    pub scale: u32,
    pub seed: u64,
    pub values: Values,
    pub subscribe: bool,
    pub threads: usize,
    pub timeout: Duration,
}

/// How long to wait for CONNACK or SUBACK before giving up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters shared by the connections, read for progress in error messages.
#[derive(Default)]
struct Progress {
    written: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
}

impl Progress {
    fn describe(&self) -> String {
        format!(
            "{} written, {} acknowledged, {} delivered",
            self.written.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed)
        )
    }
}

/// The payloads: `messages` slices of one generated buffer, each holding
/// `lines` whole rows (newline-terminated).
fn payloads(args: &MqttArgs) -> Result<(Vec<Bytes>, u64), String> {
    let mut rows = Rows::new(args.scale, args.seed, args.values)?;
    let total = args
        .messages
        .checked_mul(args.lines)
        .ok_or("--messages × --lines overflows")?;
    let mut buf = String::with_capacity(total.saturating_mul(500));
    let mut ends = Vec::with_capacity(args.messages);
    for _ in 0..args.messages {
        for _ in 0..args.lines {
            rows.next_into(&mut buf);
        }
        ends.push(buf.len());
    }
    let all = Bytes::from(buf.into_bytes());
    let mut start = 0;
    let out = ends
        .into_iter()
        .map(|end| {
            let p = all.slice(start..end);
            start = end;
            p
        })
        .collect();
    Ok((out, all.len() as u64))
}

fn split_broker(broker: &str) -> Result<(String, u16), String> {
    let (host, port) = broker
        .rsplit_once(':')
        .ok_or_else(|| format!("--broker {broker:?}: expected host:port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("--broker {broker:?}: invalid port"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

fn options(args: &MqttArgs, id: String, max_packet: usize) -> Result<MqttOptions, String> {
    let (host, port) = split_broker(&args.broker)?;
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    // rumqttc refuses packets over 10 KiB by default, in both directions;
    // a 100-line message is ~50 KB.
    o.set_max_packet_size(max_packet, max_packet);
    o.set_inflight(args.inflight);
    o.set_clean_session(true);
    Ok(o)
}

/// Polls until CONNACK. rumqttc connects lazily, on the first poll.
async fn connect(mut el: EventLoop, who: &str, broker: &str) -> Result<EventLoop, String> {
    let wait = async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return if ack.code == ConnectReturnCode::Success {
                        Ok(())
                    } else {
                        Err(format!(
                            "{who}: {broker} refused the connection: {:?}",
                            ack.code
                        ))
                    };
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{who}: connecting to {broker}: {e}")),
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, wait)
        .await
        .map_err(|_| format!("{who}: no CONNACK from {broker} within {HANDSHAKE_TIMEOUT:?}"))??;
    Ok(el)
}

/// Sends DISCONNECT and waits (briefly) until it is on the wire, so the
/// broker sees a clean close rather than a reset. Outside the timed section;
/// errors here do not matter any more.
async fn disconnect(client: &AsyncClient, el: &mut EventLoop) {
    if client.disconnect().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(ev) = el.poll().await {
            if ev == Event::Outgoing(Outgoing::Disconnect) {
                break;
            }
        }
    })
    .await;
}

/// Queues connection `idx`'s share of the payloads (every `n`th, from
/// `idx`). Runs as its own task: `publish_bytes` waits while rumqttc's request
/// channel is full, and the event loop must keep being polled meanwhile.
async fn feed(
    client: AsyncClient,
    idx: usize,
    n: usize,
    ctx: Arc<PublishCtx>,
) -> Result<(), String> {
    for p in ctx.payloads.iter().skip(idx).step_by(n) {
        client
            .publish_bytes(ctx.topic.clone(), ctx.qos, false, p.clone())
            .await
            .map_err(|e| format!("queueing a publish: {e}"))?;
    }
    Ok(())
}

/// Drives connection `idx` of `n` until its share is written (QoS 0) or
/// acknowledged (QoS 1); returns when that happened.
///
/// The share is fixed up front rather than handed out as connections free
/// up, because then this loop knows when it is done without also waiting on
/// the feeder: `EventLoop::poll` must never be dropped part way (a `select!`
/// that drops it mid `write_all` makes rumqttc send the partly written
/// packet again, and the broker sees garbage).
async fn publisher(
    idx: usize,
    n: usize,
    client: AsyncClient,
    mut el: EventLoop,
    ctx: Arc<PublishCtx>,
) -> Result<Instant, String> {
    let who = format!("publisher {idx}");
    let total = ctx.payloads.len().saturating_sub(idx).div_ceil(n) as u64;
    let feeder = tokio::spawn(feed(client.clone(), idx, n, ctx.clone()));
    let (mut written, mut acked) = (0u64, 0u64);
    loop {
        let done = match ctx.qos {
            QoS::AtMostOnce => written == total,
            _ => acked == total,
        };
        if done {
            break;
        }
        match el.poll().await {
            // Yielded only once the packet has been written to the socket.
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                written += 1;
                ctx.progress.written.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked += 1;
                ctx.progress.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Disconnect)) => {
                return Err(format!(
                    "{who}: {} sent DISCONNECT after {written} publishes, {acked} acknowledged",
                    ctx.broker
                ));
            }
            Ok(_) => {}
            // Sluice closes the connection when it cannot store a publish;
            // rumqttc would reconnect and resend, which would hide the
            // failure and double-count, so stop instead.
            Err(e) => {
                return Err(format!(
                    "{who}: connection to {} failed after {written} publishes, {acked} acknowledged: {e}",
                    ctx.broker
                ));
            }
        }
    }
    let finished = Instant::now();
    // Everything it queued has been sent, so it has finished or is about to.
    feeder
        .await
        .map_err(|e| format!("{who}: the feeding task failed: {e}"))?
        .map_err(|e| format!("{who}: {e}"))?;
    disconnect(&client, &mut el).await;
    Ok(finished)
}

/// Counts messages delivered on the topic until `expect` have arrived;
/// returns when the last one did and the rows they held.
async fn subscriber(
    client: AsyncClient,
    mut el: EventLoop,
    topic: String,
    expect: u64,
    progress: Arc<Progress>,
) -> Result<(Instant, u64, u64), String> {
    let (mut got, mut rows, mut dups) = (0u64, 0u64, 0u64);
    let last = loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic != topic {
                    continue;
                }
                got += 1;
                dups += u64::from(p.dup);
                rows += p.payload.iter().filter(|b| **b == b'\n').count() as u64;
                progress.delivered.fetch_add(1, Ordering::Relaxed);
                if got == expect {
                    break Instant::now();
                }
            }
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "subscriber: connection failed after {got} of {expect} messages: {e}"
                ))
            }
        }
    };
    disconnect(&client, &mut el).await;
    Ok((last, rows, dups))
}

/// What every publishing connection shares.
struct PublishCtx {
    broker: String,
    topic: String,
    qos: QoS,
    payloads: Arc<Vec<Bytes>>,
    progress: Arc<Progress>,
}

pub fn run(args: &MqttArgs) -> Result<(), String> {
    if args.connections == 0 || args.lines == 0 || args.messages == 0 || args.threads == 0 {
        return Err("--connections, --lines, --messages and --threads must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    rt.block_on(run_async(args))
}

async fn run_async(args: &MqttArgs) -> Result<(), String> {
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let cpu_start = self_cpu_seconds();
    let prep_started = Instant::now();
    let (payloads, bytes) = payloads(args)?;
    let msgs = payloads.len() as u64;
    let rows = msgs * args.lines as u64;
    let largest = payloads.iter().map(Bytes::len).max().unwrap_or(0);
    let max_packet = (largest + args.topic.len() + 1024).max(10 * 1024);
    eprintln!(
        "mqtt: {msgs} messages of {} lines ({rows} rows, {:.1} MB), QoS {}, {} connections, \
in-flight {} -> {} {}; prepared in {:.2}s",
        args.lines,
        bytes as f64 / 1e6,
        args.qos,
        args.connections,
        args.inflight,
        args.broker,
        args.topic,
        prep_started.elapsed().as_secs_f64()
    );
    let id = std::process::id();
    let progress = Arc::new(Progress::default());

    // Connections (and the subscription) are set up before the clock starts.
    let sub = if args.subscribe {
        let (client, el) = AsyncClient::new(
            options(args, format!("sluice-bench-{id}-sub"), max_packet)?,
            64,
        );
        let mut el = connect(el, "subscriber", &args.broker).await?;
        client
            .subscribe(args.topic.clone(), qos)
            .await
            .map_err(|e| format!("subscriber: queueing SUBSCRIBE: {e}"))?;
        let wait = async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        return match ack.return_codes.first() {
                            Some(SubscribeReasonCode::Success(_)) => Ok(()),
                            other => Err(format!(
                                "subscriber: {} refused the subscription to {}: {other:?}",
                                args.broker, args.topic
                            )),
                        };
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("subscriber: waiting for SUBACK: {e}")),
                }
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, wait)
            .await
            .map_err(|_| format!("subscriber: no SUBACK within {HANDSHAKE_TIMEOUT:?}"))??;
        Some((client, el))
    } else {
        None
    };
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let (client, el) = AsyncClient::new(
            options(args, format!("sluice-bench-{id}-pub-{i}"), max_packet)?,
            // Room to queue one window ahead of the event loop.
            usize::from(args.inflight),
        );
        let el = connect(el, &format!("publisher {i}"), &args.broker).await?;
        conns.push((client, el));
    }
    let ctx = Arc::new(PublishCtx {
        broker: args.broker.clone(),
        topic: args.topic.clone(),
        qos,
        payloads: Arc::new(payloads),
        progress: progress.clone(),
    });

    let cpu_before = self_cpu_seconds();
    // Wall clock, for scripts that time the data until it is visible elsewhere.
    let start_unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("the system clock is before 1970: {e}"))?
        .as_nanos();
    let started = Instant::now();
    let sub_task = sub.map(|(client, el)| {
        tokio::spawn(subscriber(
            client,
            el,
            args.topic.clone(),
            msgs,
            progress.clone(),
        ))
    });
    let n = conns.len();
    let pubs: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, (client, el))| tokio::spawn(publisher(i, n, client, el, ctx.clone())))
        .collect();

    let all = async {
        let mut acked_at = started;
        for p in pubs {
            let t = p
                .await
                .map_err(|e| format!("a publisher task failed: {e}"))??;
            acked_at = acked_at.max(t);
        }
        let delivered = match sub_task {
            Some(s) => Some(
                s.await
                    .map_err(|e| format!("the subscriber task failed: {e}"))??,
            ),
            None => None,
        };
        Ok::<_, String>((acked_at, delivered))
    };
    let (acked_at, delivered) = tokio::time::timeout(args.timeout, all)
        .await
        .map_err(|_| {
            format!(
                "not done after {:?} (--timeout): {} of {msgs} messages",
                args.timeout,
                progress.describe()
            )
        })??;
    let secs = acked_at.duration_since(started).as_secs_f64();
    // Both from the start to the last connection's goodbye, so the share of a
    // core is comparable between runs.
    let elapsed = started.elapsed().as_secs_f64();
    let loader_cpu = self_cpu_seconds() - cpu_before;
    let loader_pct = 100.0 * loader_cpu / elapsed;
    let total_cpu = self_cpu_seconds() - cpu_start;

    let what = if qos == QoS::AtMostOnce {
        "written to the socket"
    } else {
        "acknowledged"
    };
    println!(
        "published {msgs} messages ({rows} rows), all {what} in {secs:.3}s: {:.0} msgs/s, {:.0} rows/s, {:.1} MB/s",
        msgs as f64 / secs,
        rows as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
    let mut extra = String::new();
    if let Some((last, got_rows, dups)) = delivered {
        let dsecs = last.duration_since(started).as_secs_f64();
        println!(
            "  delivered to the subscriber in {dsecs:.3}s: {:.0} msgs/s, {:.0} rows/s ({got_rows} rows, {dups} flagged dup)",
            msgs as f64 / dsecs,
            got_rows as f64 / dsecs
        );
        if got_rows != rows {
            return Err(format!(
                "the subscriber received {got_rows} rows in {msgs} messages, {rows} were sent"
            ));
        }
        extra = format!(
            " delivered_msgs={msgs} delivered_rows={got_rows} delivered_dups={dups} delivered_secs={dsecs:.4} \
delivered_msgs_per_s={:.0} delivered_rows_per_s={:.0}",
            msgs as f64 / dsecs,
            got_rows as f64 / dsecs
        );
    }
    println!(
        "  loader CPU {loader_cpu:.2}s while publishing ({loader_pct:.0}% of one core), {total_cpu:.2}s in all"
    );
    // One line for scripts.
    println!(
        "RESULT mode=mqtt qos={} lines={} connections={} inflight={} msgs={msgs} rows={rows} bytes={bytes} \
secs={secs:.4} msgs_per_s={:.0} rows_per_s={:.0} start_unix_ns={start_unix_ns} loader_cpu_s={loader_cpu:.3} \
loader_cpu_pct={loader_pct:.0}{extra}",
        args.qos,
        args.lines,
        args.connections,
        args.inflight,
        msgs as f64 / secs,
        rows as f64 / secs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(messages: usize, lines: usize) -> MqttArgs {
        MqttArgs {
            broker: "127.0.0.1:1883".into(),
            topic: "ingest/bench".into(),
            qos: 1,
            connections: 1,
            inflight: 10,
            lines,
            messages,
            scale: 3,
            seed: 1,
            values: Values::Full,
            subscribe: false,
            threads: 1,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn payloads_hold_whole_rows_in_generator_order() {
        let (p, bytes) = payloads(&args(4, 5)).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p.iter().map(Bytes::len).sum::<usize>() as u64, bytes);
        let text: String = p.iter().map(|m| std::str::from_utf8(m).unwrap()).collect();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20);
        for m in &p {
            assert!(m.ends_with(b"\n"));
            assert_eq!(m.iter().filter(|b| **b == b'\n').count(), 5);
        }
        // 3 hosts: rows 0..3 are epoch 0, row 3 is host_0 at epoch 1.
        assert!(lines[3].starts_with("cpu,hostname=host_0,"));
        assert!(lines[3].ends_with(" 1451606410000000000"));
    }

    /// The messages carry exactly the rows `generate` writes, in its order.
    #[test]
    fn payloads_are_the_generated_file() {
        let dir = std::env::temp_dir().join(format!("sluice-bench-mqtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cpu.lp");
        // 3 hosts x 60 s = 18 rows; 7 messages of 2 lines take the first 14.
        crate::generate::generate(3, 60, 1, Values::Full, &path).unwrap();
        let file = std::fs::read(&path).unwrap();
        let (p, _) = payloads(&args(7, 2)).unwrap();
        let sent: Vec<u8> = p.iter().flat_map(|m| m.iter().copied()).collect();
        let first_14: usize = file
            .split_inclusive(|b| *b == b'\n')
            .take(14)
            .map(<[u8]>::len)
            .sum();
        assert_eq!(sent, file[..first_14]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn broker_addresses() {
        assert_eq!(
            split_broker("127.0.0.1:1883").unwrap(),
            ("127.0.0.1".to_string(), 1883)
        );
        assert_eq!(split_broker("[::1]:18").unwrap(), ("::1".to_string(), 18));
        assert!(split_broker("localhost").is_err());
        assert!(split_broker("h:x").is_err());
    }
}
