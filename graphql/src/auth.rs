//! Who is calling. On AWS the HTTP API's JWT authorizer verifies the token and the transport
//! reads its claims ([`caller_from_claims`]); where no authorizer runs (the local stage, and every
//! WebSocket connection) the token is verified here against the configured key ([`Verifier`]).

use baton_app::Caller;
use baton_domain::Tenant;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The claim naming the caller's tenant.
pub const TENANT_CLAIM: &str = "tenant";
/// The OAuth scope (in the space-separated `scope` claim) of Baton's operators.
pub const ADMIN_SCOPE: &str = "baton:admin";

/// How far a token's `exp` and `nbf` may be off the verifier's clock, in seconds: the skew
/// between an identity provider's clock and Lambda's, and nothing more.
pub const LEEWAY_SECONDS: u64 = 30;

/// Why a caller was refused. What a client is told is the same for every invalid token; why
/// it was invalid (`Invalid`'s reason) goes to the log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token came with the request.
    #[error("no token: send `Authorization: Bearer <token>`")]
    Missing,
    /// The token is not valid here, for the reason given (logged, never sent).
    #[error("the bearer token was refused")]
    Invalid(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    tenant: String,
    iss: String,
    aud: String,
    exp: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    scope: String,
}

/// Verifies bearer tokens: HS256 with a shared secret (the local stage) or RS256 with the
/// identity provider's public key, always checking issuer, audience, expiry and not-before,
/// with [`LEEWAY_SECONDS`] of clock skew.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    fn new(key: DecodingKey, algorithm: Algorithm, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Self { key, validation }
    }

    /// Tokens signed with HS256 and `secret`.
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
            issuer,
            audience,
        )
    }

    /// Tokens signed with RS256 by the holder of the private half of `public_pem`.
    pub fn rs256(public_pem: &[u8], issuer: &str, audience: &str) -> Result<Self, AuthError> {
        let key = DecodingKey::from_rsa_pem(public_pem)
            .map_err(|e| AuthError::Invalid(format!("the configured public key: {e}")))?;
        Ok(Self::new(key, Algorithm::RS256, issuer, audience))
    }

    /// From `JWT_ISSUER`, `JWT_AUDIENCE` and either `JWT_SECRET` or `JWT_PUBLIC_KEY` (PEM);
    /// `None` when neither key is set (every request then needs authorizer claims).
    pub fn from_env() -> Result<Option<Self>, AuthError> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(issuer), Some(audience)) = (var("JWT_ISSUER"), var("JWT_AUDIENCE")) else {
            return Ok(None);
        };
        match (var("JWT_SECRET"), var("JWT_PUBLIC_KEY")) {
            (Some(secret), _) => Ok(Some(Self::hs256(secret.as_bytes(), &issuer, &audience))),
            (None, Some(pem)) => Self::rs256(pem.as_bytes(), &issuer, &audience).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The caller a token names, if it is valid.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        caller(&data.claims.tenant, &data.claims.sub, &data.claims.scope)
    }
}

fn caller(tenant: &str, subject: &str, scope: &str) -> Result<Caller, AuthError> {
    let tenant = Tenant::parse(tenant)
        .map_err(|e| AuthError::Invalid(format!("claim `{TENANT_CLAIM}`: {e}")))?;
    Ok(Caller {
        tenant,
        subject: subject.to_owned(),
        admin: scope.split_whitespace().any(|s| s == ADMIN_SCOPE),
    })
}

/// The caller named by claims an authorizer has verified (API Gateway's `jwt.claims`).
pub fn caller_from_claims(claims: &Value) -> Result<Caller, AuthError> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    match (text(TENANT_CLAIM), text("sub")) {
        (Some(tenant), Some(subject)) => caller(tenant, subject, text("scope").unwrap_or("")),
        _ => Err(AuthError::Invalid(format!(
            "the token has no `{TENANT_CLAIM}` or `sub` claim"
        ))),
    }
}

/// The token in an `Authorization` header value (`Bearer <token>`, or the bare token).
pub fn bearer(header: &str) -> Option<&str> {
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or(header)
        .trim();
    (!token.is_empty()).then_some(token)
}

/// Mints an HS256 token for `caller` (its tenant, subject and admin scope), valid for `ttl`: for
/// the local stage and tests.
pub fn mint(
    secret: &[u8],
    issuer: &str,
    audience: &str,
    caller: &Caller,
    ttl: chrono::Duration,
) -> String {
    let claims = Claims {
        sub: caller.subject.clone(),
        tenant: caller.tenant.to_string(),
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        exp: (chrono::Utc::now() + ttl).timestamp(),
        scope: if caller.admin {
            ADMIN_SCOPE.to_owned()
        } else {
            String::new()
        },
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing with a secret cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Caller {
        Caller {
            tenant: Tenant::parse("acme").unwrap(),
            subject: "ada".to_owned(),
            admin: false,
        }
    }

    #[test]
    fn a_minted_token_verifies_and_names_its_caller() {
        let verifier = Verifier::hs256(b"secret", "baton-local", "baton");
        let token = mint(
            b"secret",
            "baton-local",
            "baton",
            &acme(),
            chrono::Duration::hours(1),
        );
        assert_eq!(verifier.verify(&token), Ok(acme()));
        let operator = Caller {
            admin: true,
            ..acme()
        };
        let token = mint(
            b"secret",
            "baton-local",
            "baton",
            &operator,
            chrono::Duration::hours(1),
        );
        assert_eq!(verifier.verify(&token), Ok(operator));
    }

    #[test]
    fn wrong_key_issuer_audience_or_expiry_is_refused() {
        let verifier = Verifier::hs256(b"secret", "baton-local", "baton");
        let hour = chrono::Duration::hours(1);
        for token in [
            mint(b"other", "baton-local", "baton", &acme(), hour),
            mint(b"secret", "someone-else", "baton", &acme(), hour),
            mint(b"secret", "baton-local", "other-api", &acme(), hour),
            mint(b"secret", "baton-local", "baton", &acme(), -hour),
            "not.a.token".to_owned(),
        ] {
            assert!(
                matches!(verifier.verify(&token), Err(AuthError::Invalid(_))),
                "{token}"
            );
        }
    }

    #[test]
    fn not_before_and_expiry_hold_within_the_documented_leeway() {
        let verifier = Verifier::hs256(b"secret", "baton-local", "baton");
        let now = chrono::Utc::now().timestamp();
        let leeway = LEEWAY_SECONDS as i64;
        let token = |exp: i64, nbf: Option<i64>| {
            let mut claims = serde_json::json!({"sub": "ada", "tenant": "acme",
                "iss": "baton-local", "aud": "baton", "exp": exp});
            if let Some(nbf) = nbf {
                claims["nbf"] = nbf.into();
            }
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"secret"),
            )
            .unwrap()
        };
        assert!(verifier.verify(&token(now + 3600, Some(now - 10))).is_ok());
        assert!(
            verifier
                .verify(&token(now + 3600, Some(now + leeway - 5)))
                .is_ok()
        );
        assert!(
            verifier
                .verify(&token(now + 3600, Some(now + leeway + 60)))
                .is_err()
        );
        assert!(verifier.verify(&token(now - leeway + 5, None)).is_ok());
        assert!(verifier.verify(&token(now - leeway - 5, None)).is_err());
    }

    #[test]
    fn a_refusal_tells_the_client_nothing_of_why() {
        let verifier = Verifier::hs256(b"secret", "baton-local", "baton");
        for token in [
            "not.a.token",
            &mint(
                b"other",
                "baton-local",
                "baton",
                &acme(),
                chrono::Duration::hours(1),
            ),
        ] {
            let refused = verifier.verify(token).unwrap_err();
            assert_eq!(refused.to_string(), "the bearer token was refused");
            assert!(matches!(refused, AuthError::Invalid(reason) if !reason.is_empty()));
        }
    }

    #[test]
    fn authorizer_claims_need_a_valid_tenant_and_subject() {
        let claims = serde_json::json!({"sub": "ada", "tenant": "acme"});
        assert_eq!(caller_from_claims(&claims), Ok(acme()));
        let operator =
            serde_json::json!({"sub": "ada", "tenant": "acme", "scope": "read baton:admin"});
        assert!(caller_from_claims(&operator).unwrap().admin);
        assert!(caller_from_claims(&serde_json::json!({"sub": "ada"})).is_err());
        assert!(caller_from_claims(&serde_json::json!({"sub": "a", "tenant": "a#b"})).is_err());
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
    }
}
