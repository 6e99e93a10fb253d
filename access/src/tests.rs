use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::*;

#[derive(Default, Clone)]
struct Memory(Arc<Mutex<BTreeMap<String, Vec<u8>>>>);

#[async_trait]
impl Backend for Memory {
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .0
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    async fn store(&self, puts: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        let mut m = self.0.lock();
        for (k, v) in puts {
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
        Ok(())
    }
}

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

async fn with_admin() -> (Access, Memory, Principal) {
    let mem = Memory::default();
    let a = must(Access::open(Box::new(mem.clone()), None));
    assert!(must(a.bootstrap("admin", "first-password").await));
    assert!(!must(a.bootstrap("admin", "again").await), "only once");
    let admin = must(a.login(None, Some("admin"), "first-password").await);
    assert!(admin.is_superuser());
    (a, mem, admin)
}

fn user(name: &str, password: &str) -> RoleSpec {
    RoleSpec {
        name: name.into(),
        login: true,
        password: Some(password.into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_checked_and_never_stored_in_the_clear() {
    let (a, mem, admin) = with_admin().await;
    must(a.create_role(&admin, user("alice", "correct horse")).await);
    assert!(a.login(None, Some("alice"), "correct horse").await.is_ok());
    // The second check comes from the cache and must still be right.
    assert!(a.login(None, Some("alice"), "correct horse").await.is_ok());
    for (u, p) in [
        ("alice", "wrong"),
        ("nobody", "correct horse"),
        ("alice", ""),
    ] {
        match a.login(None, Some(u), p).await {
            Err(AccessError::Unauthenticated(m)) => assert!(!m.contains(u) || u == "alice", "{m}"),
            other => panic!("{u}/{p}: {other:?}"),
        }
    }
    for (k, v) in mem.0.lock().iter() {
        let text = String::from_utf8_lossy(v);
        assert!(!text.contains("correct horse"), "{k} holds the password");
        assert!(!text.contains("first-password"), "{k} holds the password");
    }
    // A changed password takes effect at once, even where the old one was
    // remembered.
    let alice = must(a.login(None, Some("alice"), "correct horse").await);
    must(
        a.alter_role(
            &alice,
            "alice",
            RoleChange {
                password: Some(Some("battery staple".into())),
                ..Default::default()
            },
        )
        .await,
    );
    assert!(a.login(None, Some("alice"), "correct horse").await.is_err());
    assert!(a.login(None, Some("alice"), "battery staple").await.is_ok());
    // But alice may not make herself a superuser.
    let err = a
        .alter_role(
            &alice,
            "alice",
            RoleChange {
                superuser: Some(true),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(err, Err(AccessError::Denied { .. })), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_per_database_and_inherited_through_roles() {
    let (a, mem, admin) = with_admin().await;
    must(a.create_role(&admin, user("bob", "pw-bob")).await);
    must(
        a.create_role(
            &admin,
            RoleSpec {
                name: "readers".into(),
                ..Default::default()
            },
        )
        .await,
    );
    must(
        a.set_privileges(
            &admin,
            "readers",
            &["plant".into()],
            Privs::of(&[Privilege::Read]),
            true,
        )
        .await,
    );
    must(
        a.set_privileges(
            &admin,
            "bob",
            &["lab".into()],
            Privs::of(&[Privilege::Write]),
            true,
        )
        .await,
    );
    let bob = must(a.login(None, Some("bob"), "pw-bob").await);
    assert!(!bob.allows("plant", Privilege::Read));
    must(a.set_membership(&admin, "readers", "bob", true).await);
    let bob = must(a.login(None, Some("bob"), "pw-bob").await);
    assert!(bob.allows("plant", Privilege::Read));
    assert!(!bob.allows("plant", Privilege::Write));
    assert!(bob.allows("lab", Privilege::Write));
    assert!(
        !bob.allows("lab", Privilege::Read),
        "write does not imply read"
    );
    assert!(!bob.is_superuser());
    assert!(matches!(
        bob.check("plant", Privilege::Admin),
        Err(AccessError::Denied { .. })
    ));
    // A cycle is refused.
    assert!(a
        .set_membership(&admin, "bob", "readers", true)
        .await
        .is_err());
    // Admin on every database allows everything on each.
    must(
        a.set_privileges(&admin, "bob", &[ALL_DATABASES.into()], Privs::ALL, true)
            .await,
    );
    let bob = must(a.login(None, Some("bob"), "pw-bob").await);
    assert!(bob.allows("anything", Privilege::Read) && bob.allows("x", Privilege::Admin));
    must(
        a.set_privileges(&admin, "bob", &[ALL_DATABASES.into()], Privs::ALL, false)
            .await,
    );

    // What was written is what a restart reads.
    let again = must(Access::open(Box::new(mem.clone()), None));
    let bob = must(again.login(None, Some("bob"), "pw-bob").await);
    assert!(bob.allows("plant", Privilege::Read) && bob.allows("lab", Privilege::Write));
    assert!(!bob.allows("anything", Privilege::Read));

    // Dropping a role takes its grants away from its members.
    must(a.drop_role(&admin, "readers", false).await);
    let bob = must(a.login(None, Some("bob"), "pw-bob").await);
    assert!(!bob.allows("plant", Privilege::Read));
    assert!(!must(a.drop_role(&admin, "readers", true).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_carry_at_most_their_owners_rights_and_expire() {
    let (a, _mem, admin) = with_admin().await;
    must(a.create_role(&admin, user("carol", "pw-carol")).await);
    let rw = Privs::of(&[Privilege::Read, Privilege::Write]);
    must(
        a.set_privileges(&admin, "carol", &["plant".into()], rw, true)
            .await,
    );
    let carol = must(a.login(None, Some("carol"), "pw-carol").await);

    let mut only_read = Grants::default();
    only_read.add("plant", Privs::of(&[Privilege::Read]));
    let (t, token) = must(
        a.create_token(
            &carol,
            TokenRequest {
                description: "grafana".into(),
                grants: Some(only_read),
                ..Default::default()
            },
        )
        .await,
    );
    assert!(looks_like_token(&token));
    // Any user name goes with a token, as InfluxDB clients send it.
    let p = must(a.login(None, Some("whatever"), &token).await);
    assert_eq!(p.user, "carol");
    assert!(p.allows("plant", Privilege::Read));
    assert!(!p.allows("plant", Privilege::Write), "the token narrows");
    // More than the owner has cannot be handed out.
    let mut too_much = Grants::default();
    too_much.add("other", Privs::of(&[Privilege::Read]));
    let err = a
        .create_token(
            &carol,
            TokenRequest {
                grants: Some(too_much),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(err, Err(AccessError::Denied { .. })), "{err:?}");
    // A token cannot make tokens.
    assert!(a.create_token(&p, TokenRequest::default()).await.is_err());
    // When the owner loses a right, so does the token.
    must(
        a.set_privileges(&admin, "carol", &["plant".into()], rw, false)
            .await,
    );
    let p = must(a.login(None, None, &token).await);
    assert!(!p.allows("plant", Privilege::Read));
    // A wrong secret with a right id fails.
    let forged = format!("sl_{}_{}", t.id, "0".repeat(64));
    assert!(a.login(None, None, &forged).await.is_err());
    // A token revokes itself and no other.
    let (other, other_token) = must(a.create_token(&carol, TokenRequest::default()).await);
    let by_token = must(a.login(None, None, &other_token).await);
    assert!(matches!(
        a.revoke_token(&by_token, &t.id).await,
        Err(AccessError::Denied { .. })
    ));
    // A connection that outlives the login sees a revocation at once.
    let before = must(a.login(None, None, &token).await);
    must(a.revoke_token(&by_token, &other.id).await);
    assert!(a.refresh(&by_token).is_err());
    assert!(a.refresh(&before).is_ok());
    // Revoked: refused.
    must(a.revoke_token(&carol, &t.id).await);
    assert!(a.login(None, None, &token).await.is_err());
    assert!(a.refresh(&before).is_err());
    // A user barred from logging in cannot by token either.
    let (_, live) = must(a.create_token(&carol, TokenRequest::default()).await);
    must(
        a.alter_role(
            &admin,
            "carol",
            RoleChange {
                login: Some(false),
                ..Default::default()
            },
        )
        .await,
    );
    assert!(a.login(None, None, &live).await.is_err());
    must(
        a.alter_role(
            &admin,
            "carol",
            RoleChange {
                login: Some(true),
                ..Default::default()
            },
        )
        .await,
    );
    assert!(a.login(None, None, &live).await.is_ok());

    // An expiry passes.
    let (_, short) = must(
        a.create_token(
            &carol,
            TokenRequest {
                expires_ms: Some(now_ms() + 1500),
                ..Default::default()
            },
        )
        .await,
    );
    assert!(a.login(None, None, &short).await.is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    match a.login(None, None, &short).await {
        Err(AccessError::Unauthenticated(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_superuser_stays_and_the_shared_token_is_root() {
    let (a, mem, admin) = with_admin().await;
    must(a.create_role(&admin, user("dave", "pw")).await);
    let dave = must(a.login(None, Some("dave"), "pw").await);
    assert!(matches!(
        a.drop_role(&dave, "admin", false).await,
        Err(AccessError::Denied { .. })
    ));
    let demote = RoleChange {
        superuser: Some(false),
        ..Default::default()
    };
    assert!(matches!(
        a.alter_role(&admin, "admin", demote.clone()).await,
        Err(AccessError::Invalid(_))
    ));
    assert!(
        a.drop_role(&admin, "admin", false).await.is_err(),
        "not oneself"
    );
    // Nor by letting the last superuser's password lapse.
    let lapse = RoleChange {
        valid_until: Some(Some(1)),
        ..Default::default()
    };
    assert!(matches!(
        a.alter_role(&admin, "admin", lapse).await,
        Err(AccessError::Invalid(_))
    ));

    let with_root = must(Access::open(
        Box::new(mem.clone()),
        Some("shared-secret".into()),
    ));
    let root = must(with_root.login(None, None, "shared-secret").await);
    assert!(root.is_superuser());
    assert!(with_root.login(None, None, "shared-secreT").await.is_err());
    must(with_root.alter_role(&root, "admin", demote).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_hold_back_their_address_even_with_the_right_password() {
    let (a, _mem, admin) = with_admin().await;
    let a = a.with_throttle(Arc::new(LoginThrottle::new(
        2,
        std::time::Duration::from_secs(60),
    )));
    must(a.create_role(&admin, user("alice", "correct horse")).await);
    let guesser: Option<std::net::IpAddr> = "198.51.100.9".parse().ok();
    let other: Option<std::net::IpAddr> = "198.51.100.10".parse().ok();
    for _ in 0..2 {
        assert!(matches!(
            a.login(guesser, Some("alice"), "guess").await,
            Err(AccessError::Unauthenticated(_))
        ));
    }
    // Another address is not held back by them.
    assert!(a.login(other, Some("alice"), "correct horse").await.is_ok());
    let e = a.login(guesser, Some("alice"), "correct horse").await;
    assert!(matches!(e, Err(AccessError::Throttled { .. })), "{e:?}");
    assert!(must_err(e).to_string().contains("too many failed logins"));
    assert!(a.login(other, Some("alice"), "correct horse").await.is_ok());
    assert!(a.login(None, Some("alice"), "correct horse").await.is_ok());
}

fn must_err<T: std::fmt::Debug>(r: Result<T>) -> AccessError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}
