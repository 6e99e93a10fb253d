//! Sluice patch (not part of rmqtt 0.24.0): QoS 1 publishes that a client has
//! already sent are taken off the socket together and their ACL hooks run
//! concurrently, so a hook that acknowledges only after a durable write
//! waits for one write per batch instead of one per message. Everything else
//! keeps the order of arrival: topic aliases are resolved, messages are
//! forwarded and PUBACKs are written in the order the publishes came in
//! [MQTT-4.6.0-2], and the hooks are first polled in that order too.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use futures::future::{maybe_done, MaybeDone};
use futures::FutureExt;

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

/// Runs all futures to completion, polling them in the order given on every
/// wake-up (join_all does not promise that order once the list is long).
async fn join_in_order<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<MaybeDone<F>>>> = futs.into_iter().map(|f| Box::pin(maybe_done(f))).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for f in futs.iter_mut() {
            pending |= f.as_mut().poll(cx).is_pending();
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    futs.iter_mut().filter_map(|f| f.as_mut().take_output()).collect()
}

impl SessionState {
    /// Room left in the client's in-flight window, for `take_acked_publishes`.
    pub(super) fn publish_room(&self) -> usize {
        self.in_inflight.room()
    }

    pub(super) async fn process_publish_batch<Io>(
        &mut self,
        sink: &mut Sink<Io>,
        mut batch: Vec<Publish>,
    ) -> std::result::Result<(), Reason>
    where
        Io: AsyncRead + AsyncWrite + Unpin,
    {
        let now = timestamp_millis();
        if batch.len() == 1 {
            if let Some(p) = batch.pop() {
                return self.process_publish(sink, p.create_time(now)).await;
            }
        }
        let mut claimed = Vec::with_capacity(batch.len());
        let res = self.publish_batch(sink, batch, now, &mut claimed).await;
        for (packet_id, added) in claimed {
            if added {
                self.in_inflight.remove(&packet_id);
            }
        }
        res
    }

    async fn publish_batch<Io>(
        &mut self,
        sink: &mut Sink<Io>,
        batch: Vec<Publish>,
        now: i64,
        claimed: &mut Vec<(NonZeroU16, bool)>,
    ) -> std::result::Result<(), Reason>
    where
        Io: AsyncRead + AsyncWrite + Unpin,
    {
        // Phase one, in order: claim the packet ids, resolve aliases, run the
        // message_publish hook. A failure stops the batch there; what came
        // before it is still answered, what came after is never acknowledged
        // and the client sends it again.
        let mut resolved = Vec::with_capacity(batch.len());
        let mut failure: Option<Reason> = None;
        for publish in batch {
            let publish = publish.create_time(now);
            let packet_id = match Self::packet_id(publish.packet_id) {
                Ok(id) => id,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            match self.in_inflight.add(packet_id, QoS::AtLeastOnce) {
                Ok(added) => claimed.push((packet_id, added)),
                Err(e) => {
                    //hook, Message dropped
                    self.scx
                        .extends
                        .hook_mgr()
                        .message_dropped(None, From::from_custom(self.id.clone()), publish, e.clone())
                        .await;
                    failure = Some(e);
                    break;
                }
            }
            match self.publish_resolve(publish).await {
                Ok(r) => resolved.push((packet_id, r)),
                Err(e) => {
                    // Through `publish_outcome` so it is counted as the
                    // single-message path counts it.
                    if let Err(e) = self.publish_outcome(Err(e)) {
                        failure = Some(e.into());
                    }
                    break;
                }
            }
        }

        // Phase two, concurrently: the ACL hooks.
        let this = &*self;
        let checks =
            join_in_order(resolved.iter().map(|(_, (from, p))| this.publish_check_acl(from, p)).collect()).await;

        // Phase three, in order: forward, then acknowledge.
        for ((packet_id, (from, publish)), check) in resolved.into_iter().zip(checks) {
            let res = match check {
                Err(e) => Err(e),
                Ok(Some(refused)) => Ok(refused),
                Ok(None) => this.publish_forward(from, publish).await,
            };
            let pubres = this.publish_outcome(res)?;
            sink.send_publish_ack(packet_id, pubres).await?;
        }
        match failure {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}
