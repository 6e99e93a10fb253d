//! Who may connect to the broker and what each client may publish and
//! subscribe to: users and tokens from the access directory, topic ACLs
//! from the configuration (with `${username}` and `${clientid}` filled in
//! from the verified login, never from a name the client merely claims),
//! and the database grants a publish needs when a route stores it. Rights
//! are read again at every publish and subscribe, so a revocation reaches
//! clients that stay connected.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rmqtt::codec::v5::{PublishAckReason, SubscribeAckReason};
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::{
    AuthResult, ConnectInfo, Id, LastWill, Publish, PublishAclResult, PublishResult,
    SubscribeAclResult,
};
use serde::{Deserialize, Serialize};
use sluice_access::{Access, LoginThrottle, Principal, Privilege};

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
        match sample.strip_prefix("eq ") {
            Some("") => Err("topic is empty".into()),
            Some(_) => Ok(()),
            None => valid_filter(&sample).map_err(|e| format!("topic {:?}: {e}", self.topic)),
        }
    }

    fn applies_to(&self, user: Option<&str>) -> bool {
        self.user == "*" || Some(self.user.as_str()) == user
    }

    /// The topic with mosquitto's `%u`/`%c` written as EMQX's placeholders.
    fn placeheld(&self) -> String {
        self.topic
            .replace("%u", "${username}")
            .replace("%c", "${clientid}")
    }
}

/// A filter as MQTT allows it: `#` only as the last level, `+` and `#`
/// only as whole levels.
fn valid_filter(f: &str) -> Result<(), String> {
    if f.is_empty() {
        return Err("empty".into());
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return Err("`#` may only be a whole last level".into());
        }
        if l.contains('+') && *l != "+" {
            return Err("`+` may only be a whole level".into());
        }
    }
    Ok(())
}

/// Whether every topic `s` can match, `r` matches too.
fn covers(r: &[&str], s: &[&str]) -> bool {
    match (r.first(), s.first()) {
        (Some(&"#"), _) => true,
        (None, None) => true,
        (Some(&"+"), Some(&x)) if x != "#" => covers(&r[1..], &s[1..]),
        (Some(a), Some(b)) if a == b && *a != "+" => covers(&r[1..], &s[1..]),
        _ => false,
    }
}

/// Whether some topic matches both filters.
fn overlaps(a: &[&str], b: &[&str]) -> bool {
    match (a.first(), b.first()) {
        (Some(&"#"), _) | (_, Some(&"#")) => true,
        (None, None) => true,
        (Some(&x), Some(&y)) if x == "+" || y == "+" || x == y => overlaps(&a[1..], &b[1..]),
        _ => false,
    }
}

/// Whether filter `f` matches topic name `t` (wildcards do not reach into
/// `$`-topics at the first level, as MQTT says).
fn matches_topic(f: &[&str], t: &str) -> bool {
    if t.starts_with('$') && matches!(f.first(), Some(&"+") | Some(&"#")) {
        return false;
    }
    let levels: Vec<&str> = t.split('/').collect();
    covers(f, &levels)
}

/// One rule, made for one client.
#[derive(Debug, Clone)]
struct Compiled {
    allow: bool,
    publish: bool,
    subscribe: bool,
    /// `eq <topic>`: that topic exactly.
    exact: bool,
    topic: String,
}

impl Compiled {
    fn levels(&self) -> Vec<&str> {
        self.topic.split('/').collect()
    }

    fn hits_publish(&self, topic: &str) -> bool {
        self.publish
            && if self.exact {
                self.topic == topic
            } else {
                matches_topic(&self.levels(), topic)
            }
    }

    /// An allow rule must cover all a subscription may receive; a deny rule
    /// stops a subscription that could receive any of what it names.
    fn hits_subscribe(&self, filter: &str) -> bool {
        if !self.subscribe {
            return false;
        }
        let sub: Vec<&str> = filter.split('/').collect();
        match (self.allow, self.exact) {
            (true, true) => self.topic == filter,
            (true, false) => covers(&self.levels(), &sub),
            (false, _) => overlaps(&self.levels(), &sub),
        }
    }
}

/// The first rule that decides, as allow or deny.
fn decide(rules: &[Compiled], hit: impl Fn(&Compiled) -> bool) -> Option<&Compiled> {
    rules.iter().find(|r| hit(r))
}

/// Who a connected client is.
#[derive(Clone)]
enum Who {
    /// Logged in with a clear-text `mqtt.users` password: no database
    /// grants to check, as before users existed.
    ConfigUser,
    As(Arc<Principal>),
}

#[derive(Clone)]
struct Client {
    who: Who,
    rules: Arc<Vec<Compiled>>,
}

/// The broker's gate: logins, and the clients they let in.
pub struct Gate {
    pub access: Option<Arc<Access>>,
    /// Failed logins per client address, `mqtt.users` ones included.
    throttle: Arc<LoginThrottle>,
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

/// Subscriptions to `$share/<group>/<filter>` are checked as `<filter>`.
fn unshared(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|r| r.split_once('/'))
        .map_or(filter, |(_, f)| f)
}

impl Gate {
    pub fn new(
        access: Option<Arc<Access>>,
        throttle: Arc<LoginThrottle>,
        users: BTreeMap<String, String>,
        acl: Vec<AclRule>,
        no_match_allows: bool,
    ) -> Gate {
        Gate {
            access,
            throttle,
            users,
            acl,
            no_match_allows,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, id: &Id) -> Option<Client> {
        self.clients.lock().ok()?.get(&key(id)).cloned()
    }

    /// The verified user name, if any, and what the login is.
    async fn login(&self, info: &ConnectInfo) -> Result<(Option<String>, Who), String> {
        let user = info.username().map(|u| u.to_string());
        let peer = info.id().remote_addr.map(|a| a.ip());
        self.throttle.check(peer).map_err(|e| e.to_string())?;
        let Some(password) = info.password() else {
            self.throttle.failed(peer);
            return Err("no password".into());
        };
        let password =
            std::str::from_utf8(password).map_err(|_| "the password is not UTF-8".to_string())?;
        if let Some(u) = &user {
            if let Some(expected) = self.users.get(u) {
                if sluice_access::secret::same(expected.as_bytes(), password.as_bytes()) {
                    return Ok((user, Who::ConfigUser));
                }
            }
        }
        let Some(access) = &self.access else {
            self.throttle.failed(peer);
            return Err("bad username or password".into());
        };
        match access.login(peer, user.as_deref(), password).await {
            Ok(p) => {
                // With a token, the user is the token's, whatever name
                // the client gave.
                let verified = (!p.is_root()).then(|| p.user.clone());
                Ok((verified, Who::As(Arc::new(p))))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The ACL rules for a client, placeholders filled in from its verified
    /// user name and its client id.
    fn rules(&self, user: Option<&str>, client_id: &str) -> Result<Vec<Compiled>, String> {
        let mut out = Vec::new();
        for r in self.acl.iter().filter(|r| r.applies_to(user)) {
            let mut topic = r.placeheld().replace("${clientid}", client_id);
            if topic.contains("${username}") {
                match user {
                    Some(u) => topic = topic.replace("${username}", u),
                    // A deny rule that cannot be read for this client must
                    // not be skipped; an allow rule can be.
                    None if r.permission == "deny" => {
                        return Err(format!(
                            "ACL rule {:?} names the user, and this login has none",
                            r.topic
                        ))
                    }
                    None => continue,
                }
            }
            let (exact, topic) = match topic.strip_prefix("eq ") {
                Some(t) => (true, t.to_string()),
                None => (false, topic),
            };
            out.push(Compiled {
                allow: r.permission == "allow",
                publish: matches!(r.action.as_str(), "publish" | "all"),
                subscribe: matches!(r.action.as_str(), "subscribe" | "all"),
                exact,
                topic,
            });
        }
        Ok(out)
    }

    /// The client's principal as of now (grants and revocations since it
    /// connected included); None for a configuration user.
    fn current(&self, who: &Who) -> Result<Option<Principal>, String> {
        match (who, &self.access) {
            (Who::ConfigUser, _) => Ok(None),
            (Who::As(p), Some(a)) => a.refresh(p).map(Some).map_err(|e| e.to_string()),
            (Who::As(_), None) => Err("no access directory".into()),
        }
    }

    fn may_publish(
        &self,
        who: &Who,
        rules: &[Compiled],
        topic: &str,
        routes: &RouteTable,
    ) -> Result<(), String> {
        let p = self.current(who)?;
        if !p.as_ref().is_some_and(Principal::is_superuser) {
            match decide(rules, |r| r.hits_publish(topic)) {
                Some(r) if r.allow => {}
                Some(_) => return Err(format!("the ACL denies publishing to {topic}")),
                None if self.no_match_allows => {}
                None => return Err(format!("no ACL rule allows publishing to {topic}")),
            }
        }
        match &p {
            Some(p) => self.may_store(p, topic, routes),
            None => Ok(()),
        }
    }

    fn may_subscribe(&self, who: &Who, rules: &[Compiled], filter: &str) -> Result<(), String> {
        let p = self.current(who)?;
        if p.as_ref().is_some_and(Principal::is_superuser) {
            return Ok(());
        }
        let filter = unshared(filter);
        match decide(rules, |r| r.hits_subscribe(filter)) {
            Some(r) if r.allow => Ok(()),
            Some(_) => Err(format!("the ACL denies subscribing to {filter}")),
            None if self.no_match_allows => Ok(()),
            None => Err(format!("no ACL rule allows subscribing to {filter}")),
        }
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
            Some(c) => match self.may_publish(&c.who, &c.rules, &publish.topic, routes) {
                Ok(()) => return None,
                Err(r) => r,
            },
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

fn will_topic(w: &LastWill<'_>) -> String {
    match w {
        LastWill::V3(l) => l.topic.to_string(),
        LastWill::V5(l) => l.topic.to_string(),
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
                let verdict = match self.gate.client(&session.id) {
                    Some(c) => self.gate.may_subscribe(&c.who, &c.rules, &sub.topic_filter),
                    None => Err("the client is not logged in".to_string()),
                };
                match verdict {
                    Ok(()) => (true, acc),
                    Err(reason) => {
                        tracing::info!(client = %session.id.client_id, filter = %sub.topic_filter, %reason, "MQTT subscription refused");
                        (
                            false,
                            Some(HookResult::SubscribeAclResult(
                                SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized),
                            )),
                        )
                    }
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
        let (user, who) = self
            .gate
            .login(info)
            .await
            .map_err(|r| (r, AuthResult::BadUsernameOrPassword))?;
        let rules = self
            .gate
            .rules(user.as_deref(), info.client_id())
            .map_err(|r| (r, AuthResult::NotAuthorized))?;
        // A will is published after the client is gone, past the publish
        // check: it is checked now, as if it were published now.
        if let Some(w) = info.last_will() {
            let topic = will_topic(&w);
            self.gate
                .may_publish(&who, &rules, &topic, &self.routes)
                .map_err(|r| (format!("will: {r}"), AuthResult::NotAuthorized))?;
        }
        if let Ok(mut m) = self.gate.clients.lock() {
            m.insert(
                key(info.id()),
                Client {
                    who,
                    rules: Arc::new(rules),
                },
            );
        }
        // Never a broker superuser: rmqtt would then skip the publish hook
        // that stores messages.
        Ok(AuthResult::Allow(false, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Vec<&str> {
        s.split('/').collect()
    }

    #[test]
    fn filters_cover_and_overlap_as_mqtt_matches() {
        assert!(covers(&l("sensors/#"), &l("sensors/a/b")));
        assert!(covers(&l("sensors/#"), &l("sensors")));
        assert!(covers(&l("sensors/+/t"), &l("sensors/a/t")));
        assert!(covers(&l("sensors/+/t"), &l("sensors/+/t")));
        assert!(!covers(&l("sensors/+"), &l("sensors/#")));
        assert!(!covers(&l("sensors/a"), &l("sensors/+")));
        assert!(!covers(&l("sensors/a"), &l("sensors/a/b")));
        assert!(overlaps(&l("secret/#"), &l("#")));
        assert!(overlaps(&l("secret/x"), &l("+/x")));
        assert!(overlaps(&l("a/+/c"), &l("a/b/#")));
        assert!(!overlaps(&l("secret/x"), &l("public/#")));
        assert!(matches_topic(&l("#"), "a/b"));
        assert!(!matches_topic(&l("#"), "$SYS/uptime"));
        assert!(valid_filter("a/+/#").is_ok());
        assert!(valid_filter("a/#/b").is_err() && valid_filter("a+/b").is_err());
    }

    #[test]
    fn a_deny_rule_stops_wildcard_subscriptions_that_reach_it() {
        let gate = Gate::new(
            None,
            Arc::new(LoginThrottle::new(0, std::time::Duration::ZERO)),
            Default::default(),
            vec![
                AclRule {
                    user: "*".into(),
                    action: "subscribe".into(),
                    topic: "secret/#".into(),
                    permission: "deny".into(),
                },
                AclRule {
                    user: "*".into(),
                    action: "all".into(),
                    topic: "devices/${username}/#".into(),
                    permission: "allow".into(),
                },
            ],
            true,
        );
        let rules = gate.rules(Some("d7"), "c1").unwrap_or_default();
        let who = Who::ConfigUser;
        assert!(gate.may_subscribe(&who, &rules, "#").is_err());
        assert!(gate
            .may_subscribe(&who, &rules, "$share/g/secret/+")
            .is_err());
        assert!(
            gate.may_subscribe(&who, &rules, "public/#").is_ok(),
            "no rule: allowed"
        );
        let routes = RouteTable { routes: Vec::new() };
        assert!(gate
            .may_publish(&who, &rules, "devices/d7/t", &routes)
            .is_ok());
        // A login without a user name cannot use a deny rule about users.
        let strict = Gate::new(
            None,
            Arc::new(LoginThrottle::new(0, std::time::Duration::ZERO)),
            Default::default(),
            vec![AclRule {
                user: "*".into(),
                action: "publish".into(),
                topic: "devices/%u/#".into(),
                permission: "deny".into(),
            }],
            true,
        );
        assert!(strict.rules(None, "c1").is_err());
    }
}
