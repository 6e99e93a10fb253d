//! What Sluice plugs into rmqtt: the ingest hook,
//! retained-message storage and shared-subscription balancing.

use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::channel::oneshot;
use rmqtt::codec::types::QoS;
use rmqtt::codec::v5::PublishAckReason;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::retain::{DefaultRetainStorage, RetainStorage};
use rmqtt::subscribe::SharedSubscription;
use rmqtt::types::{
    FromType, Publish, PublishAclResult, PublishResult, Retain, TopicFilter, TopicName,
};

use super::pipeline::{Job, Pipeline};
use super::RouteTable;

#[derive(Clone)]
pub struct Ingest {
    pub routes: Arc<RouteTable>,
    /// With authentication on: who may publish where.
    pub gate: Option<Arc<super::access::Gate>>,
    pub pipeline: Pipeline,
    pub max_payload: usize,
}

impl Ingest {
    /// Stores `publish` if a route claims its topic. With `wait`, resolves
    /// only once it is durable.
    async fn store(&self, publish: &Publish, wait: bool) -> Result<(), String> {
        let topic: &str = &publish.topic;
        let Some(route) = self.routes.find(topic) else {
            return Ok(());
        };
        if publish.payload.len() > self.max_payload {
            return Err(format!(
                "payload of {} bytes exceeds mqtt.max_payload_bytes ({})",
                publish.payload.len(),
                self.max_payload
            ));
        }
        let (tx, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.pipeline
            .submit(Job {
                route,
                topic: publish.topic.clone(),
                payload: publish.payload.clone(),
                arrival: crate::lp::now_ns(),
                done: tx,
                charged: 0,
            })
            .await?;
        match rx {
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err("the ingest pipeline has stopped".into())),
            None => Ok(()),
        }
    }
}

fn refused(reason: String) -> HookResult {
    HookResult::PublishAclResult(PublishAclResult(PublishResult {
        reason_code: PublishAckReason::ImplementationSpecificError,
        properties: Default::default(),
        reason_string: Some(reason.into()),
        // Without an acknowledgement the client resends after reconnecting.
        disconnect: true,
    }))
}

#[async_trait]
impl Handler for Ingest {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            // Every client PUBLISH passes here before it is forwarded or
            // acknowledged.
            Parameter::MessagePublishCheckAcl(session, publish) => {
                if let Some(HookResult::PublishAclResult(r)) = &acc {
                    if r.is_rejected() {
                        return (false, acc);
                    }
                }
                if let Some(g) = &self.gate {
                    if let Some(refusal) = g.check_publish(session, publish, &self.routes).await {
                        return (false, Some(refusal));
                    }
                }
                match self.store(publish, publish.qos != QoS::AtMostOnce).await {
                    Ok(()) => (true, acc),
                    Err(reason) => {
                        tracing::warn!(topic = %publish.topic, %reason, "MQTT publish refused");
                        (false, Some(refused(reason)))
                    }
                }
            }
            // Will messages do not pass the ACL hook; nobody waits for them.
            Parameter::MessagePublish(_, from, publish)
                if matches!(from.typ(), FromType::LastWill) =>
            {
                if let Err(reason) = self.store(publish, false).await {
                    tracing::warn!(topic = %publish.topic, %reason, "will message not stored");
                }
                (true, acc)
            }
            _ => (true, acc),
        }
    }
}

/// Retained messages in memory, as rmqtt's own store keeps them, switched
/// on, with a cap on how many topics may hold one and a purge of expired
/// ones (rmqtt's store does neither by itself). Clones share the store.
#[derive(Clone, Default)]
pub struct Retained {
    inner: Arc<DefaultRetainStorage>,
    count: Arc<AtomicIsize>,
    max: Arc<AtomicIsize>,
}

/// Topics that may hold a retained message at once.
pub const MAX_RETAINED: isize = 100_000;

impl Retained {
    /// Drops retained messages whose expiry has passed.
    pub async fn purge_expired(&self) {
        let removed = self.inner.remove_expired_messages().await;
        if removed > 0 {
            self.count.fetch_sub(removed as isize, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl RetainStorage for Retained {
    fn enable(&self) -> bool {
        true
    }

    async fn set(
        &self,
        topic: &TopicName,
        retain: Retain,
        expiry_interval: Option<Duration>,
    ) -> rmqtt::Result<()> {
        let existed = !self.inner.get_message(topic).await?.is_empty();
        let clears = retain.publish.payload.is_empty();
        if !existed && !clears && self.count.load(Ordering::Relaxed) >= MAX_RETAINED {
            // Refusing the publish would disconnect the client; the message
            // is still delivered, just not kept for later subscribers.
            tracing::warn!(%topic, limit = MAX_RETAINED, "retained message not kept: too many retained topics");
            return Ok(());
        }
        self.inner
            .set_with_timeout(topic, retain, expiry_interval)
            .await?;
        match (existed, clears) {
            (false, false) => {
                let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
                self.max.fetch_max(n, Ordering::Relaxed);
            }
            (true, true) => {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        Ok(())
    }

    async fn get(&self, topic_filter: &TopicFilter) -> rmqtt::Result<Vec<(TopicName, Retain)>> {
        self.inner.get_message(topic_filter).await
    }

    async fn count(&self) -> isize {
        self.count.load(Ordering::Relaxed)
    }

    async fn max(&self) -> isize {
        self.max.load(Ordering::Relaxed)
    }
}

/// Shared subscriptions (`$share/<group>/<filter>`): each message goes to
/// one member of the group, taking turns, preferring members that are
/// connected; when all are offline, one persistent session queues it.
#[derive(Default)]
pub struct Shared {
    next: AtomicUsize,
}

type Member = (
    rmqtt::types::NodeId,
    rmqtt::types::ClientId,
    rmqtt::types::SubscriptionOptions,
    Option<Vec<rmqtt::types::SubscriptionIdentifier>>,
    Option<rmqtt::types::IsOnline>,
);

#[async_trait]
impl SharedSubscription for Shared {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        scx: &ServerContext,
        _group: &rmqtt::types::SharedGroup,
        _publisher: &rmqtt::types::Id,
        _topic: &TopicName,
        members: &[Member],
    ) -> Option<(usize, rmqtt::types::IsOnline)> {
        if members.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let router = scx.extends.router().await;
        for i in 0..members.len() {
            let idx = (start + i) % members.len();
            let (node, client, _, _, online) = &members[idx];
            let online = match online {
                Some(o) => *o,
                None => router.is_online(*node, client).await,
            };
            if online {
                return Some((idx, true));
            }
        }
        Some((start % members.len(), false))
    }
}
