//! Secrets at rest: passwords and token secrets are kept only as salted
//! hashes. A password has two: an argon2id hash, checked when a password is
//! sent in the clear over TLS (HTTP basic auth, MQTT), and a SCRAM-SHA-256
//! verifier (stored key and server key, as PostgreSQL keeps it), which the
//! PostgreSQL protocol needs and from which the password cannot be replayed.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::{AccessError, Result};

/// RFC 7677's minimum and PostgreSQL's default; the client does this work
/// once per connection.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// Tokens read `sl_<id>_<secret>`: the id finds the record without a scan,
/// the secret is checked against its hash.
const TOKEN_PREFIX: &str = "sl_";

#[derive(Clone, Serialize, Deserialize)]
pub struct PasswordHash {
    /// PHC string (`$argon2id$v=19$…`).
    pub argon2: String,
    pub scram: ScramVerifier,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct ScramVerifier {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(<redacted>)")
    }
}

fn argon2_hash(secret: &[u8]) -> Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccessError::Hashing(e.to_string()))
}

/// Whether `secret` matches the argon2 PHC string `phc` (in constant time,
/// inside the argon2 crate).
pub fn argon2_verify(phc: &str, secret: &[u8]) -> bool {
    match argon2::password_hash::PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(secret, &h).is_ok(),
        Err(_) => false,
    }
}

pub fn scram_verifier(password: &str) -> ScramVerifier {
    let salt: [u8; 16] = rand::random();
    scram_verifier_with(password, &salt)
}

fn scram_verifier_with(password: &str, salt: &[u8]) -> ScramVerifier {
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(SCRAM_ITERATIONS).unwrap_or(std::num::NonZeroU32::MIN),
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    ScramVerifier {
        salt: salt.to_vec(),
        iterations: SCRAM_ITERATIONS,
        stored_key: stored_key.as_ref().to_vec(),
        server_key: server_key.as_ref().to_vec(),
    }
}

pub fn hash_password(password: &str) -> Result<PasswordHash> {
    if password.is_empty() {
        return Err(AccessError::Invalid(
            "a password cannot be empty: leave it out (PASSWORD NULL) to log in by token only"
                .into(),
        ));
    }
    Ok(PasswordHash {
        argon2: argon2_hash(password.as_bytes())?,
        scram: scram_verifier(password),
    })
}

/// A new token: its id, the whole token to hand out, and the hash to keep.
pub fn new_token() -> (String, String, String) {
    let id: [u8; 8] = rand::random();
    let secret: [u8; 32] = rand::random();
    let (id, secret) = (hex(&id), hex(&secret));
    let hash = token_hash(&secret);
    (id.clone(), format!("{TOKEN_PREFIX}{id}_{secret}"), hash)
}

/// A token secret's hash: salted SHA-256 (`sha256$<salt>$<digest>`). A
/// token's secret is 256 random bits, so a slow hash adds nothing against
/// guessing it; a fast one keeps a flood of made-up tokens from costing
/// what a flood of passwords costs.
pub fn token_hash(secret: &str) -> String {
    let salt: [u8; 16] = rand::random();
    format!(
        "sha256${}${}",
        hex(&salt),
        hex(&salted_digest(&salt, secret))
    )
}

fn salted_digest(salt: &[u8], secret: &str) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(salt);
    ctx.update(secret.as_bytes());
    ctx.finish().as_ref().to_vec()
}

/// Whether `secret` is the one `hash` was made from.
pub fn token_verify(hash: &str, secret: &str) -> bool {
    let mut parts = hash.split('$');
    let (Some("sha256"), Some(salt), Some(want), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    match (unhex(salt), unhex(want)) {
        (Some(salt), Some(want)) => same(&salted_digest(&salt, secret), &want),
        _ => false,
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The id and secret of something shaped like a token.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexy = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    (id.len() == 16 && secret.len() == 64 && hexy(id) && hexy(secret)).then_some((id, secret))
}

pub fn looks_like_token(s: &str) -> bool {
    split_token(s).is_some()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Equal-time comparison of two secrets.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The key under which a verified secret is remembered: keyed by a value
/// drawn at start, so the cache holds nothing that could be checked against
/// a guess offline.
pub fn cache_key(process_key: &[u8; 32], kind: u8, name: &str, secret: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, process_key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(&[kind]);
    ctx.update(name.as_bytes());
    ctx.update(&[0]);
    ctx.update(secret);
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_checks_against_its_hash_and_no_other() {
        let h = hash_password("s3cret!").unwrap_or_else(|e| panic!("{e}"));
        assert!(h.argon2.starts_with("$argon2id$"));
        assert!(argon2_verify(&h.argon2, b"s3cret!"));
        assert!(!argon2_verify(&h.argon2, b"s3cret"));
        assert!(!argon2_verify("not a hash", b"s3cret!"));
        let again = hash_password("s3cret!").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(h.argon2, again.argon2, "salted");
        assert_ne!(h.scram.stored_key, again.scram.stored_key, "salted");
    }

    #[test]
    fn the_scram_verifier_checks_rfc_7677s_exchange() {
        // RFC 7677 section 3: password "pencil", 4096 iterations; the
        // client's proof must check against the stored key, and the server
        // key must give the server signature the RFC shows.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap_or_default();
        let v = scram_verifier_with("pencil", &salt);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sign = |k: &[u8]| {
            hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, k),
                auth_message.as_bytes(),
            )
        };
        let server_sig = sign(&v.server_key);
        assert_eq!(
            b64.encode(server_sig.as_ref()),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let proof = b64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap_or_default();
        let client_sig = sign(&v.stored_key);
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_sig.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            digest::digest(&digest::SHA256, &client_key).as_ref(),
            v.stored_key.as_slice()
        );
    }

    #[test]
    fn tokens_have_one_shape() {
        let (id, token, hash) = new_token();
        let (i, s) = split_token(&token).unwrap_or_else(|| panic!("{token}"));
        assert_eq!(i, id);
        assert!(token_verify(&hash, s));
        assert!(!token_verify(&hash, &"0".repeat(64)));
        assert!(!token_verify("sha256$zz$00", s));
        assert!(!hash.contains(s), "the hash holds the secret");
        assert!(split_token("sl_1234_abcd").is_none());
        assert!(split_token("hunter2").is_none());
    }
}
