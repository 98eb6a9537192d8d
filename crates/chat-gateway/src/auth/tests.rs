//! The token rules, with tokens signed here by the test keys of
//! `tests/fixtures/` and an HS256 secret.

use std::path::PathBuf;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn hs(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn signed(alg: Algorithm, private: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = std::fs::read(fixture(private)).unwrap();
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

fn secret_verifier(audience: Option<&str>, issuer: Option<&str>) -> Verifier {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, [SECRET, b"\n"].concat()).unwrap();
    Verifier::load(&AuthFiles {
        secret_file: Some(&path),
        audience,
        issuer,
        ..AuthFiles::default()
    })
    .unwrap()
    .unwrap()
}

fn key_verifier(keys: &[&str]) -> Verifier {
    let keys: Vec<PathBuf> = keys.iter().map(|k| fixture(k)).collect();
    Verifier::load(&AuthFiles {
        public_keys: &keys,
        ..AuthFiles::default()
    })
    .unwrap()
    .unwrap()
}

fn alice(ttl: i64) -> Value {
    json!({"sub": "alice-1", "name": "Alice", "exp": (now() as i64 + ttl), "iat": now()})
}

#[test]
fn no_key_means_anonymous_mode_and_claims_need_a_key() {
    assert!(Verifier::load(&AuthFiles::default()).unwrap().is_none());
    let err = Verifier::load(&AuthFiles {
        audience: Some("chat"),
        ..AuthFiles::default()
    })
    .err()
    .unwrap();
    assert!(err.contains("--auth-audience"), "{err}");
}

#[test]
fn a_short_secret_or_a_bad_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, b"too short\n").unwrap();
    let err = Verifier::load(&AuthFiles {
        secret_file: Some(&short),
        ..AuthFiles::default()
    })
    .err()
    .unwrap();
    assert!(err.contains("at least 32 bytes"), "{err}");
    let not_pem = [dir.path().join("short")];
    let err = Verifier::load(&AuthFiles {
        public_keys: &not_pem,
        ..AuthFiles::default()
    })
    .err()
    .unwrap();
    assert!(err.contains("--auth-jwt-public-key"), "{err}");
    let missing = [dir.path().join("nope.pem")];
    assert!(Verifier::load(&AuthFiles {
        public_keys: &missing,
        ..AuthFiles::default()
    })
    .is_err());
}

#[test]
fn a_valid_hs256_token_names_the_identity() {
    let v = secret_verifier(None, None);
    let claims = json!({"sub": "alice-1", "name": " Alice ", "exp": now() + 60, "rooms": ["lobby", "team-*"]});
    let id = v.verify(&hs(&claims), now()).unwrap();
    assert_eq!(id.key, "alice-1");
    assert_eq!(id.display, "Alice");
    assert_eq!(id.expires_at, now() + 60);
    let rooms = id.rooms.unwrap();
    assert!(rooms.allows("lobby") && rooms.allows("team-a") && rooms.allows("team-"));
    assert!(!rooms.allows("lobby2") && !rooms.allows("random") && !rooms.allows("tea"));
}

#[test]
fn the_display_name_falls_back_to_sub() {
    let v = secret_verifier(None, None);
    let id = v
        .verify(&hs(&json!({"sub": "bob", "exp": now() + 60})), now())
        .unwrap();
    assert_eq!((id.key.as_str(), id.display.as_str()), ("bob", "bob"));
    assert!(id.rooms.is_none());
    // A name that is no valid display name falls back too; a long sub is cut.
    let sub = "0123456789-0123456789-0123456789-0123456789";
    let id = v
        .verify(
            &hs(&json!({"sub": sub, "name": "", "exp": now() + 60})),
            now(),
        )
        .unwrap();
    assert_eq!(id.key, sub);
    assert_eq!(id.display, &sub[..32]);
}

#[test]
fn expired_early_and_incomplete_tokens_are_refused() {
    let v = secret_verifier(None, None);
    let cases = [
        (json!({"sub": "a", "exp": now() - 60}), "expired"),
        (
            json!({"sub": "a", "exp": now() + 60, "nbf": now() + 60}),
            "not valid yet",
        ),
        (
            json!({"sub": "a", "exp": now() + 60, "iat": now() + 60}),
            "future",
        ),
        (json!({"sub": "a"}), "exp"),
        (json!({"exp": now() + 60}), "sub"),
        (json!({"sub": "", "exp": now() + 60}), "sub"),
    ];
    for (claims, why) in cases {
        let err = v.verify(&hs(&claims), now()).unwrap_err();
        assert!(err.0.contains(why), "{claims}: {err}");
    }
    // Within the leeway, a clock a little behind or ahead is forgiven.
    let skewed = json!({"sub": "a", "exp": now() - 2, "nbf": now() + 2, "iat": now() + 2});
    assert!(v.verify(&hs(&skewed), now()).is_ok());
}

#[test]
fn garbage_a_wrong_key_and_none_are_refused() {
    let v = secret_verifier(None, None);
    assert!(v.verify("", now()).unwrap_err().0.contains("required"));
    assert!(v
        .verify("not a jwt", now())
        .unwrap_err()
        .0
        .contains("malformed"));
    let mut admin = alice(60);
    admin["sub"] = json!("admin");
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &admin,
        &EncodingKey::from_secret(b"another secret, also 32 bytes long!"),
    )
    .unwrap();
    assert_eq!(v.verify(&forged, now()).unwrap_err().0, "bad signature");
    // alg "none" with no signature: refused before any key is tried.
    let token = hs(&alice(60));
    let parts: Vec<&str> = token.split('.').collect();
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    assert!(v
        .verify(&format!("{none_header}.{}.", parts[1]), now())
        .is_err());
    assert!(v
        .verify(&format!("{none_header}.{}.{}", parts[1], parts[2]), now())
        .is_err());
    // A payload from elsewhere (another sub) breaks the signature.
    let other = forged.split('.').nth(1).unwrap().to_owned();
    let tampered = format!("{}.{}.{}", parts[0], other, parts[2]);
    assert_eq!(v.verify(&tampered, now()).unwrap_err().0, "bad signature");
}

#[test]
fn only_the_algorithms_of_the_configured_keys_are_accepted() {
    let v = key_verifier(&["rsa-public.pem"]);
    let ok = signed(Algorithm::RS256, "rsa-private.pem", None, &alice(60));
    assert_eq!(v.verify(&ok, now()).unwrap().key, "alice-1");
    // HS256 with the public key as the secret (the classic confusion).
    let public = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &alice(60),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert!(v
        .verify(&confused, now())
        .unwrap_err()
        .0
        .contains("not accepted"));
    let es = signed(Algorithm::ES256, "ec-private.pem", None, &alice(60));
    assert!(v.verify(&es, now()).unwrap_err().0.contains("not accepted"));
    let rs384 = signed(Algorithm::RS384, "rsa-private.pem", None, &alice(60));
    assert!(v.verify(&rs384, now()).is_err());
    let hs_only = secret_verifier(None, None);
    assert!(hs_only
        .verify(&ok, now())
        .unwrap_err()
        .0
        .contains("not accepted"));
}

#[test]
fn several_public_keys_rotate_and_es256_works() {
    let v = key_verifier(&["rsa-public.pem", "rsa2-public.pem", "ec-public.pem"]);
    for (alg, private) in [
        (Algorithm::RS256, "rsa-private.pem"),
        (Algorithm::RS256, "rsa2-private.pem"),
        (Algorithm::ES256, "ec-private.pem"),
    ] {
        let token = signed(alg, private, None, &alice(60));
        assert!(v.verify(&token, now()).is_ok(), "{private}");
    }
    let only_first = key_verifier(&["rsa-public.pem"]);
    let second = signed(Algorithm::RS256, "rsa2-private.pem", None, &alice(60));
    assert_eq!(
        only_first.verify(&second, now()).unwrap_err().0,
        "bad signature"
    );
}

#[test]
fn a_jwks_file_selects_keys_by_kid() {
    let pem = std::fs::read(fixture("ec-private.pem")).unwrap();
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
        &EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::ES256,
    )
    .unwrap();
    let mut jwk = serde_json::to_value(jwk).unwrap();
    jwk["kid"] = json!("k1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys": [jwk]}).to_string()).unwrap();
    let v = Verifier::load(&AuthFiles {
        jwks_file: Some(&path),
        ..AuthFiles::default()
    })
    .unwrap()
    .unwrap();
    let token = signed(Algorithm::ES256, "ec-private.pem", Some("k1"), &alice(60));
    assert!(v.verify(&token, now()).is_ok());
    let other_kid = signed(Algorithm::ES256, "ec-private.pem", Some("k2"), &alice(60));
    assert!(v.verify(&other_kid, now()).is_err());
    std::fs::write(&path, "{\"keys\": []}").unwrap();
    assert!(Verifier::load(&AuthFiles {
        jwks_file: Some(&path),
        ..AuthFiles::default()
    })
    .is_err());
}

#[test]
fn audience_and_issuer_are_required_when_configured() {
    let v = secret_verifier(Some("chat"), Some("https://id.example"));
    let mut claims = alice(60);
    // Both missing: either is named (the library checks them in no fixed order).
    assert!(v
        .verify(&hs(&claims), now())
        .unwrap_err()
        .0
        .contains("lacks the"));
    claims["iss"] = json!("https://id.example");
    assert!(v.verify(&hs(&claims), now()).unwrap_err().0.contains("aud"));
    claims.as_object_mut().unwrap().remove("iss");
    claims["aud"] = json!("chat");
    assert!(v.verify(&hs(&claims), now()).unwrap_err().0.contains("iss"));
    claims["iss"] = json!("https://id.example");
    assert!(v.verify(&hs(&claims), now()).is_ok());
    claims["aud"] = json!("other");
    assert_eq!(
        v.verify(&hs(&claims), now()).unwrap_err().0,
        "wrong audience"
    );
    claims["aud"] = json!("chat");
    claims["iss"] = json!("https://evil.example");
    assert_eq!(v.verify(&hs(&claims), now()).unwrap_err().0, "wrong issuer");
}
