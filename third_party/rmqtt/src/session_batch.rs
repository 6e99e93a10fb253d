//! Sluice patch (not part of rmqtt 0.24.0): QoS 1 publishes that a client has
//! already sent are taken off the socket together and their ACL hooks run
//! concurrently, so a hook that acknowledges only after a durable write
//! waits for one write per batch instead of one per message. The connection
//! goes on reading while a batch's hooks run, so several batches of one
//! client can wait on the same write. Everything else keeps the order of
//! arrival: topic aliases are resolved, messages are forwarded and PUBACKs
//! are written in the order the publishes came in [MQTT-4.6.0-2], and the
//! hooks are first polled in that order too.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use futures::future::{maybe_done, BoxFuture, MaybeDone};
use futures::{FutureExt, SinkExt};

use crate::codec::MqttPacket;

use super::*;

/// The most publishes taken as one batch; the in-flight window caps it too.
const PUBLISH_BATCH_MAX: usize = 256;

/// A QoS 1 publish: the only kind whose acknowledgement can wait on the hook
/// without changing the protocol's flow (QoS 2 keeps its own exchange).
pub(super) fn is_acked_publish(pkt: &Packet) -> bool {
    match pkt {
        Packet::V3(v3::Packet::Publish(p)) => p.qos == QoS::AtLeastOnce,
        Packet::V5(v5::Packet::Publish(p)) => p.qos == QoS::AtLeastOnce,
        _ => false,
    }
}

fn into_publish(pkt: Packet) -> Option<Publish> {
    match pkt {
        Packet::V3(v3::Packet::Publish(p)) => Some(p.into()),
        Packet::V5(v5::Packet::Publish(p)) => Some(p.into()),
        _ => None,
    }
}

/// What followed the batch on the socket, already read: a packet of another
/// kind, the end of the stream, or a read error. `None`: nothing yet.
pub(super) type After = Option<Result<Option<Packet>>>;

/// Takes `first` and every further QoS 1 publish already readable without
/// waiting, up to `room` (what the in-flight window still allows).
pub(super) fn take_acked_publishes<Io>(sink: &mut Sink<Io>, first: Packet, room: usize) -> (Vec<Publish>, After)
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let mut batch: Vec<Publish> = into_publish(first).into_iter().collect();
    let limit = room.clamp(1, PUBLISH_BATCH_MAX);
    while batch.len() < limit {
        // `recv` is cancel-safe (the event loop selects on it), so a pending
        // read is simply dropped here and picked up by the next select.
        match sink.recv().now_or_never() {
            None => break,
            Some(Ok(Some(pkt))) if is_acked_publish(&pkt) => batch.extend(into_publish(pkt)),
            Some(other) => return (batch, Some(other)),
        }
    }
    (batch, None)
}

type AclCheck = MaybeDone<BoxFuture<'static, (From, Publish, Result<Option<PublishResult>>)>>;

/// A batch past phase one whose ACL hooks are still running.
pub(super) struct PendingBatch {
    /// Packet ids claimed in the in-flight window (`true`: added by this
    /// batch, so released when it is answered).
    claimed: Vec<(NonZeroU16, bool)>,
    checks: Vec<(NonZeroU16, AclCheck)>,
    /// Why phase one stopped early: what came before is still answered,
    /// then the connection ends with it.
    failure: Option<Reason>,
}

/// The batches of one connection whose hooks are running, oldest first.
/// The connection keeps reading while they wait, so a client whose window
/// holds several batches' worth has them all waiting on the same durable
/// writes instead of one after another.
#[derive(Default)]
pub(super) struct PendingPublishes {
    batches: VecDeque<PendingBatch>,
}

impl PendingPublishes {
    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The oldest batch, once all its hooks are done. Every hook of every
    /// batch is polled on each wake-up, in arrival order, so hooks start in
    /// the order their publishes came in.
    pub(super) async fn next_done(&mut self) -> PendingBatch {
        poll_fn(|cx| {
            for b in self.batches.iter_mut() {
                for (_, c) in b.checks.iter_mut() {
                    let _ = Pin::new(c).poll(cx);
                }
            }
            let front_done = self
                .batches
                .front()
                .is_some_and(|b| b.checks.iter().all(|(_, c)| matches!(c, MaybeDone::Done(_))));
            match self.batches.pop_front() {
                Some(b) if front_done => Poll::Ready(b),
                Some(b) => {
                    self.batches.push_front(b);
                    Poll::Pending
                }
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl<Io> Sink<Io>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    /// Queues a PUBACK without flushing it: a batch's PUBACKs leave in one
    /// write instead of one write each.
    async fn feed_publish_ack(&mut self, packet_id: NonZeroU16, pubres: PublishResult) -> Result<()> {
        let (io, timeout, packet) = match self {
            Sink::V3(s) => (&mut s.io, s.cfg.send_timeout, MqttPacket::V3(v3::Packet::PublishAck { packet_id })),
            Sink::V5(s) => {
                let ack = v5::PublishAck {
                    packet_id,
                    reason_code: pubres.reason_code,
                    properties: pubres.properties,
                    reason_string: pubres.reason_string,
                };
                (&mut s.io, s.cfg.send_timeout, MqttPacket::V5(v5::Packet::PublishAck(ack)))
            }
        };
        let fed = if timeout.is_zero() {
            Ok(io.feed(packet).await)
        } else {
            tokio::time::timeout(timeout, io.feed(packet)).await
        };
        match fed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MqttError::SendPacket(e.into()).into()),
            Err(_) => Err(MqttError::WriteTimeout.into()),
        }
    }

    async fn flush_acks(&mut self) -> Result<()> {
        match self {
            Sink::V3(s) => s.flush().await,
            Sink::V5(s) => s.flush().await,
        }
    }
}

impl SessionState {
    /// Room left in the client's in-flight window, for `take_acked_publishes`.
    pub(super) fn publish_room(&self) -> usize {
        self.in_inflight.room()
    }

    /// Phase one, in order: claims the packet ids, resolves topic aliases and
    /// runs the message_publish hook; then queues the ACL hooks (phase two)
    /// in `pending`. A failure stops the batch there; what came before it is
    /// still answered, what came after is never acknowledged and the client
    /// sends it again. Returns whether the batch failed.
    pub(super) async fn start_publish_batch(&mut self, batch: Vec<Publish>, pending: &mut PendingPublishes) -> bool {
        let now = timestamp_millis();
        let mut b = PendingBatch {
            claimed: Vec::with_capacity(batch.len()),
            checks: Vec::with_capacity(batch.len()),
            failure: None,
        };
        for publish in batch {
            let publish = publish.create_time(now);
            let packet_id = match Self::packet_id(publish.packet_id) {
                Ok(id) => id,
                Err(e) => {
                    b.failure = Some(e);
                    break;
                }
            };
            match self.in_inflight.add(packet_id, QoS::AtLeastOnce) {
                Ok(added) => b.claimed.push((packet_id, added)),
                Err(e) => {
                    //hook, Message dropped
                    self.scx
                        .extends
                        .hook_mgr()
                        .message_dropped(None, From::from_custom(self.id.clone()), publish, e.clone())
                        .await;
                    b.failure = Some(e);
                    break;
                }
            }
            match self.publish_resolve(publish).await {
                Ok((from, publish)) => {
                    let (hook, session) = (self.hook.clone(), self.inner.clone());
                    let check = async move {
                        let res = Self::check_acl(&hook, &session, &from, &publish).await;
                        (from, publish, res)
                    };
                    b.checks.push((packet_id, maybe_done(check.boxed())));
                }
                Err(e) => {
                    // Through `publish_outcome` so it is counted as the
                    // single-message path counts it.
                    if let Err(e) = self.publish_outcome(Err(e)) {
                        b.failure = Some(e.into());
                    }
                    break;
                }
            }
        }
        let failed = b.failure.is_some();
        pending.batches.push_back(b);
        failed
    }

    /// Phase three, in order: forwards and acknowledges a batch whose hooks
    /// are done, then gives its packet ids back to the window.
    pub(super) async fn finish_publish_batch<Io>(
        &mut self,
        sink: &mut Sink<Io>,
        mut b: PendingBatch,
    ) -> std::result::Result<(), Reason>
    where
        Io: AsyncRead + AsyncWrite + Unpin,
    {
        let res = self.answer_publish_batch(sink, &mut b.checks).await;
        for (packet_id, added) in b.claimed {
            if added {
                self.in_inflight.remove(&packet_id);
            }
        }
        res?;
        match b.failure {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    async fn answer_publish_batch<Io>(
        &self,
        sink: &mut Sink<Io>,
        checks: &mut [(NonZeroU16, AclCheck)],
    ) -> std::result::Result<(), Reason>
    where
        Io: AsyncRead + AsyncWrite + Unpin,
    {
        let mut outcome = Ok(());
        for (packet_id, check) in checks.iter_mut() {
            let Some((from, publish, check)) = Pin::new(check).take_output() else {
                continue;
            };
            let res = match check {
                Err(e) => Err(e),
                Ok(Some(refused)) => Ok(refused),
                Ok(None) => self.publish_forward(from, publish).await,
            };
            let fed = match self.publish_outcome(res) {
                Ok(pubres) => sink.feed_publish_ack(*packet_id, pubres).await,
                Err(e) => Err(e),
            };
            if let Err(e) = fed {
                outcome = Err(e);
                break;
            }
        }
        // What was acknowledged before a failure still reaches the client,
        // as it did when each PUBACK was written on its own.
        let flushed = sink.flush_acks().await;
        outcome?;
        flushed?;
        Ok(())
    }

    /// Answers every pending batch, oldest first: done before any packet
    /// other than a QoS 1 publish is handled, so that packet sees what came
    /// before it forwarded and acknowledged, as without batching.
    pub(super) async fn finish_pending<Io>(
        &mut self,
        sink: &mut Sink<Io>,
        pending: &mut PendingPublishes,
    ) -> std::result::Result<(), Reason>
    where
        Io: AsyncRead + AsyncWrite + Unpin,
    {
        while !pending.is_empty() {
            let b = pending.next_done().await;
            self.finish_publish_batch(sink, b).await?;
        }
        Ok(())
    }
}
