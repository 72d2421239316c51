//! The registry's bearer tokens (the Docker token-auth scheme, which
//! Distribution verifies): which access a request asks for (`scope`), what
//! a credential may have of it, and the signed JWT (ES256, with the signing
//! certificate in `x5c` so the registry checks it against the bundle Molt
//! gave it).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::EcdsaKeyPair;
use serde::Serialize;

/// One requested or granted access: `repository:NAME:ACTIONS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Parses the `scope` parameters of a token request; malformed ones are
/// ignored (they would be granted nothing anyway).
pub fn parse_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Vec<Access> {
    scopes
        .into_iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|scope| {
            // The name may contain ':' only in a registry host, which a
            // repository scope never carries: split at the first and last.
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            (!name.is_empty()).then(|| Access {
                kind: kind.to_string(),
                name: name.to_string(),
                actions: actions
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(String::from)
                    .collect(),
            })
        })
        .collect()
}

/// What a credential may do: push and pull one repository, or pull every
/// repository (the server's own pulls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    PushPull { repository: String },
    PullAll,
}

/// The part of `requested` that `grant` allows; what it does not allow is
/// left out (the registry then answers 401/403 for it), as the scheme says.
pub fn allowed(requested: &[Access], grant: &Grant) -> Vec<Access> {
    requested
        .iter()
        .filter(|a| a.kind == "repository")
        .filter_map(|a| {
            let actions: Vec<String> = a
                .actions
                .iter()
                .filter(|action| match grant {
                    Grant::PushPull { repository } => {
                        *repository == a.name && matches!(action.as_str(), "pull" | "push")
                    }
                    Grant::PullAll => action.as_str() == "pull",
                })
                .cloned()
                .collect();
            (!actions.is_empty()).then(|| Access {
                kind: a.kind.clone(),
                name: a.name.clone(),
                actions,
            })
        })
        .collect()
}

/// The claims of a token.
#[derive(Debug, Serialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub access: Vec<Access>,
}

#[derive(Serialize)]
struct Header<'a> {
    typ: &'a str,
    alg: &'a str,
    x5c: [String; 1],
}

/// A signed JWT: ES256 over `header.claims`, the signing certificate (DER)
/// in the header.
pub fn sign(key: &EcdsaKeyPair, cert_der: &[u8], claims: &Claims) -> anyhow::Result<String> {
    let header = Header {
        typ: "JWT",
        alg: "ES256",
        x5c: [STANDARD.encode(cert_der)],
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
    );
    let signature = key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|_| anyhow::anyhow!("signing a registry token failed"))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{
        KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
    };

    #[test]
    fn scopes_are_parsed() {
        let s = parse_scopes([
            "repository:web:pull,push",
            "repository:team/api:pull",
            "bad",
            "x::",
        ]);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].name, "web");
        assert_eq!(s[0].actions, ["pull", "push"]);
        assert_eq!(s[1].name, "team/api");
        let joined = parse_scopes(["repository:a:pull repository:b:push"]);
        assert_eq!(joined.len(), 2);
    }

    #[test]
    fn a_build_credential_reaches_its_repository_only() {
        let asked = parse_scopes(["repository:web:pull,push,delete", "repository:other:pull"]);
        let grant = Grant::PushPull {
            repository: "web".into(),
        };
        let got = allowed(&asked, &grant);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].name, "web");
        assert_eq!(got[0].actions, ["pull", "push"], "no delete");
        let got = allowed(&asked, &Grant::PullAll);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|a| a.actions == ["pull"]));
        assert!(allowed(&parse_scopes(["registry:catalog:*"]), &Grant::PullAll).is_empty());
    }

    #[test]
    fn tokens_verify_with_the_public_key() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let claims = Claims {
            iss: "molt".into(),
            sub: "build-1".into(),
            aud: "molt-registry".into(),
            exp: 2,
            nbf: 0,
            iat: 1,
            jti: "j".into(),
            access: Vec::new(),
        };
        let token = sign(&key, b"cert", &claims).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["x5c"][0], STANDARD.encode(b"cert"));
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(sig.len(), 64, "r||s, as JWS wants");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key().as_ref())
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
    }
}
