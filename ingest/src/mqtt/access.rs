//! Who may connect to the broker and what each client may publish and
//! subscribe to: users and tokens from the access directory, topic ACLs
//! from the configuration (evaluated by rmqtt's rule engine, with its
//! `${username}` and `${clientid}` placeholders), and the database grants a
//! publish needs when a route stores it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rmqtt::acl::{AuthInfo, Rule};
use rmqtt::codec::v5::{PublishAckReason, SubscribeAckReason};
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::{
    AuthResult, ConnectInfo, Id, LastWill, Publish, PublishAclResult, PublishResult,
    SubscribeAclResult,
};
use serde::{Deserialize, Serialize};
use sluice_access::{Access, Principal, Privilege};

use super::RouteTable;

/// One topic ACL rule. Rules are tried in order; the first whose user,
/// action and topic match decides.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// A user name, or `*` for every user.
    #[serde(default = "every_user")]
    pub user: String,
    /// `publish`, `subscribe` or `all`.
    pub action: String,
    /// A topic filter (`+` and `#` wildcards), or `eq <topic>` for exactly
    /// that topic; `${username}` (or `%u`) and `${clientid}` (or `%c`) are
    /// the client's.
    pub topic: String,
    /// `allow` or `deny`.
    #[serde(default = "allow")]
    pub permission: String,
}

fn every_user() -> String {
    "*".into()
}

fn allow() -> String {
    "allow".into()
}

impl AclRule {
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.action.as_str(), "publish" | "subscribe" | "all") {
            return Err(format!(
                "action {:?}: use publish, subscribe or all",
                self.action
            ));
        }
        if !matches!(self.permission.as_str(), "allow" | "deny") {
            return Err(format!(
                "permission {:?}: use allow or deny",
                self.permission
            ));
        }
        let sample = self
            .placeheld()
            .replace("${username}", "u")
            .replace("${clientid}", "c");
        let filter = sample.strip_prefix("eq ").unwrap_or(&sample);
        if filter.is_empty() {
            return Err("topic is empty".into());
        }
        filter
            .parse::<rmqtt::topic::Topic>()
            .map(|_| ())
            .map_err(|e| format!("topic {:?}: {e}", self.topic))
    }

    /// The topic with mosquitto's `%u`/`%c` written as rmqtt's placeholders.
    fn placeheld(&self) -> String {
        self.topic
            .replace("%u", "${username}")
            .replace("%c", "${clientid}")
    }

    fn applies_to(&self, user: Option<&str>) -> bool {
        self.user == "*" || Some(self.user.as_str()) == user
    }
}

/// What a connected client may do.
#[derive(Clone)]
enum Client {
    /// Logged in with a clear-text `mqtt.users` password: no database
    /// grants to check, as before users existed.
    Anything,
    As(Arc<Principal>),
}

/// The broker's gate: logins, and the clients they let in.
pub struct Gate {
    pub access: Option<Arc<Access>>,
    /// `mqtt.users`: clear-text passwords from the configuration, for a
    /// broker without the access directory.
    pub users: BTreeMap<String, String>,
    pub acl: Vec<AclRule>,
    /// What happens when no ACL rule matches.
    pub no_match_allows: bool,
    clients: Mutex<HashMap<String, Client>>,
}

/// One connection's key: the id carries the address and the time it
/// connected, so a client reconnecting under the same id is another entry.
fn key(id: &Id) -> String {
    id.to_string()
}

impl Gate {
    pub fn new(
        access: Option<Arc<Access>>,
        users: BTreeMap<String, String>,
        acl: Vec<AclRule>,
        no_match_allows: bool,
    ) -> Gate {
        Gate {
            access,
            users,
            acl,
            no_match_allows,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, id: &Id) -> Option<Client> {
        self.clients.lock().ok()?.get(&key(id)).cloned()
    }

    async fn login(&self, info: &ConnectInfo) -> Result<Client, String> {
        let user = info.username().map(|u| u.to_string());
        let Some(password) = info.password() else {
            return Err("no password".into());
        };
        let password =
            std::str::from_utf8(password).map_err(|_| "the password is not UTF-8".to_string())?;
        if let Some(u) = &user {
            if let Some(expected) = self.users.get(u) {
                if sluice_access::secret::same(expected.as_bytes(), password.as_bytes()) {
                    return Ok(Client::Anything);
                }
            }
        }
        let Some(access) = &self.access else {
            return Err("bad username or password".into());
        };
        match access.login(user.as_deref(), password).await {
            Ok(p) => Ok(Client::As(Arc::new(p))),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The ACL rules for this client, placeholders filled in.
    fn rules(&self, info: &ConnectInfo) -> Result<Vec<Rule>, String> {
        let user = info.username().map(|u| u.to_string());
        let mut out = Vec::new();
        for r in self.acl.iter().filter(|r| r.applies_to(user.as_deref())) {
            let json = serde_json::json!({
                "permission": r.permission,
                "action": r.action,
                "topic": r.placeheld(),
            });
            match Rule::try_from((&json, info)) {
                Ok(rule) => out.push(rule),
                // A deny rule that cannot be read for this client (it names
                // ${username} and the client gave none) must not be skipped.
                Err(e) if r.permission == "deny" => {
                    return Err(format!("ACL rule for {:?} does not apply: {e}", r.topic))
                }
                Err(_) => {}
            }
        }
        Ok(out)
    }

    /// Whether a client acting as `p` may publish to `topic`: the ACL, and
    /// write on the database a route would store it in.
    async fn may_publish(
        &self,
        p: &Principal,
        rules: &[Rule],
        publish: &Publish,
        routes: &RouteTable,
    ) -> Result<(), String> {
        if !p.is_superuser() {
            let auth = AuthInfo {
                superuser: false,
                expire_at: None,
                rules: rules.to_vec(),
            };
            match auth.publish_acl(publish, true).await {
                Some((_, Some(HookResult::PublishAclResult(r)))) if r.is_rejected() => {
                    return Err(format!("the ACL denies publishing to {}", publish.topic))
                }
                Some(_) => {}
                None if self.no_match_allows => {}
                None => {
                    return Err(format!(
                        "no ACL rule allows publishing to {}",
                        publish.topic
                    ))
                }
            }
        }
        self.may_store(p, &publish.topic, routes)
    }

    fn may_store(&self, p: &Principal, topic: &str, routes: &RouteTable) -> Result<(), String> {
        let Some((pattern, route)) = routes.find(topic).and_then(|i| routes.get(i)) else {
            return Ok(());
        };
        let captures = pattern.matches(topic).unwrap_or_default();
        // A topic the route cannot place is a dead letter, not a write.
        let Ok((db, _)) = route.resolve(&captures) else {
            return Ok(());
        };
        p.check(db, Privilege::Write).map_err(|e| e.to_string())
    }

    /// The publish check the ingest hook runs first: None lets it through.
    pub(crate) async fn check_publish(
        &self,
        session: &rmqtt::session::Session,
        publish: &Publish,
        routes: &RouteTable,
    ) -> Option<HookResult> {
        let reason = match self.client(&session.id) {
            Some(Client::Anything) => return None,
            Some(Client::As(p)) => {
                let rules = session
                    .auth_info
                    .as_ref()
                    .map(|a| a.rules.clone())
                    .unwrap_or_default();
                match self.may_publish(&p, &rules, publish, routes).await {
                    Ok(()) => return None,
                    Err(r) => r,
                }
            }
            None => "the client is not logged in".to_string(),
        };
        tracing::info!(client = %session.id.client_id, topic = %publish.topic, %reason, "MQTT publish refused");
        Some(HookResult::PublishAclResult(PublishAclResult(
            PublishResult {
                reason_code: PublishAckReason::NotAuthorized,
                properties: Default::default(),
                reason_string: Some(reason.into()),
                // An MQTT 3 client learns of a refusal only this way.
                disconnect: true,
            },
        )))
    }
}

/// The hook on connect, subscribe and disconnect.
pub(crate) struct Hook {
    pub(crate) gate: Arc<Gate>,
    pub(crate) routes: Arc<RouteTable>,
}

fn will_topic(w: &LastWill<'_>) -> (String, rmqtt::codec::types::QoS) {
    match w {
        LastWill::V3(l) => (l.topic.to_string(), l.qos),
        LastWill::V5(l) => (l.topic.to_string(), l.qos),
    }
}

#[async_trait]
impl Handler for Hook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(info) => {
                let result = match self.authenticate(info).await {
                    Ok(r) => r,
                    Err((reason, result)) => {
                        tracing::info!(client = %info.id().client_id, %reason, "MQTT client refused");
                        result
                    }
                };
                (false, Some(HookResult::AuthResult(result)))
            }
            Parameter::ClientSubscribeCheckAcl(session, sub) => {
                let p = match self.gate.client(&session.id) {
                    Some(Client::Anything) => return (true, acc),
                    Some(Client::As(p)) => p,
                    None => {
                        return (
                            false,
                            Some(HookResult::SubscribeAclResult(
                                SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized),
                            )),
                        )
                    }
                };
                if p.is_superuser() {
                    return (true, acc);
                }
                let decided = match &session.auth_info {
                    Some(a) => a.subscribe_acl(sub).await,
                    None => None,
                };
                match decided {
                    Some((_, r)) => (false, r),
                    None if self.gate.no_match_allows => (true, acc),
                    None => (
                        false,
                        Some(HookResult::SubscribeAclResult(
                            SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized),
                        )),
                    ),
                }
            }
            Parameter::ClientDisconnected(session, _) => {
                if let Ok(mut m) = self.gate.clients.lock() {
                    m.remove(&key(&session.id));
                }
                (true, acc)
            }
            _ => (true, acc),
        }
    }
}

impl Hook {
    async fn authenticate(&self, info: &ConnectInfo) -> Result<AuthResult, (String, AuthResult)> {
        let client = self
            .gate
            .login(info)
            .await
            .map_err(|r| (r, AuthResult::BadUsernameOrPassword))?;
        let rules = self
            .gate
            .rules(info)
            .map_err(|r| (r, AuthResult::NotAuthorized))?;
        // A will is published after the client is gone, past the publish
        // check: it is checked now, as if it were published now.
        if let (Client::As(p), Some(w)) = (&client, info.last_will()) {
            let (topic, qos) = will_topic(&w);
            let probe = Publish::new(
                Box::new(rmqtt::codec::types::Publish {
                    dup: false,
                    retain: w.retain(),
                    qos,
                    topic: topic.into(),
                    packet_id: None,
                    payload: bytes::Bytes::new(),
                    properties: None,
                }),
                None,
                None,
                None,
            );
            self.gate
                .may_publish(p, &rules, &probe, &self.routes)
                .await
                .map_err(|r| (format!("will: {r}"), AuthResult::NotAuthorized))?;
        }
        if let Ok(mut m) = self.gate.clients.lock() {
            m.insert(key(info.id()), client);
        }
        // Never a broker superuser: rmqtt would then skip the publish hook
        // that stores messages.
        Ok(AuthResult::Allow(
            false,
            Some(AuthInfo {
                superuser: false,
                expire_at: None,
                rules,
            }),
        ))
    }
}
