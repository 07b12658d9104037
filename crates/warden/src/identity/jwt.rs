//! Verifies `X-Warden-User-Token`: a JWT signed by the app's backend naming the end user,
//! for browsers and phones that call Warden with no API key.

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

use crate::config::secrets::JwtMaterial;
use crate::config::JwtConfig;

pub struct JwtVerifier {
    keys: KeySet,
    validation: Validation,
    user_claim: String,
}

enum KeySet {
    Single(DecodingKey),
    ByKid(HashMap<String, (DecodingKey, Algorithm)>),
}

/// The verified claims Warden uses.
#[derive(Debug, Clone)]
pub struct UserClaims {
    pub user_id: String,
    pub tier: Option<String>,
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig, material: &JwtMaterial) -> Result<Self, String> {
        let (keys, algorithms) = match material {
            JwtMaterial::Hs256(secret) => (
                KeySet::Single(DecodingKey::from_secret(secret.expose().as_bytes())),
                vec![Algorithm::HS256],
            ),
            JwtMaterial::Rs256Pem(pem) => (
                KeySet::Single(
                    DecodingKey::from_rsa_pem(pem)
                        .map_err(|e| format!("not an RSA public key in PEM form: {e}"))?,
                ),
                vec![Algorithm::RS256],
            ),
            JwtMaterial::Jwks(text) => {
                let set: JwkSet =
                    serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
                let mut by_kid = HashMap::new();
                for jwk in &set.keys {
                    let Some(kid) = jwk.common.key_id.clone() else {
                        return Err("every JWKS key needs a \"kid\"".into());
                    };
                    let key = DecodingKey::from_jwk(jwk)
                        .map_err(|e| format!("JWKS key '{kid}' is unusable: {e}"))?;
                    by_kid.insert(kid, (key, Algorithm::RS256));
                }
                if by_kid.is_empty() {
                    return Err("the JWKS document has no keys".into());
                }
                (KeySet::ByKid(by_kid), vec![Algorithm::RS256])
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            keys,
            validation,
            user_claim: config.user_claim.clone(),
        })
    }

    /// The end user named by a valid token; the error says why a token is refused.
    pub fn verify(&self, token: &str) -> Result<UserClaims, String> {
        let key = match &self.keys {
            KeySet::Single(key) => key,
            KeySet::ByKid(keys) => {
                let header = decode_header(token).map_err(|_| "malformed token".to_owned())?;
                let kid = header.kid.ok_or("the token header has no kid")?;
                &keys.get(&kid).ok_or("unknown signing key id")?.0
            }
        };
        let data =
            decode::<serde_json::Map<String, serde_json::Value>>(token, key, &self.validation)
                .map_err(|e| describe(&e))?;
        let user_id = match data.claims.get(&self.user_claim) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return Err(format!("the token has no '{}' claim", self.user_claim)),
        };
        let tier = data
            .claims
            .get("tier")
            .and_then(|t| t.as_str())
            .map(str::to_owned);
        Ok(UserClaims { user_id, tier })
    }
}

fn describe(err: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match err.kind() {
        ExpiredSignature => "the token has expired".into(),
        InvalidSignature => "bad signature".into(),
        InvalidIssuer => "wrong issuer".into(),
        InvalidAudience => "wrong audience".into(),
        InvalidAlgorithm => "signing algorithm not accepted".into(),
        MissingRequiredClaim(c) => format!("missing claim '{c}'"),
        ImmatureSignature => "the token is not valid yet".into(),
        _ => "malformed token".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::JwtKeySource;
    use crate::secret::Secret;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn verifier(issuer: Option<&str>) -> JwtVerifier {
        let config = JwtConfig {
            key: JwtKeySource::Hs256SecretEnv("X".into()),
            issuer: issuer.map(str::to_owned),
            audience: None,
            user_claim: "sub".into(),
        };
        JwtVerifier::new(
            &config,
            &JwtMaterial::Hs256(Secret::new("app-secret-0123456789")),
        )
        .unwrap()
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn in_an_hour() -> u64 {
        jsonwebtoken::get_current_timestamp() + 3600
    }

    #[test]
    fn accepts_a_valid_token() {
        let t = token(
            "app-secret-0123456789",
            serde_json::json!({"sub": "u-1", "exp": in_an_hour(), "tier": "verified"}),
        );
        let claims = verifier(None).verify(&t).unwrap();
        assert_eq!(claims.user_id, "u-1");
        assert_eq!(claims.tier.as_deref(), Some("verified"));
    }

    #[test]
    fn refuses_bad_signature_expiry_issuer_and_missing_subject() {
        let v = verifier(Some("app"));
        let forged = token(
            "another-secret-xxxxxx",
            serde_json::json!({"sub": "u", "exp": in_an_hour(), "iss": "app"}),
        );
        assert_eq!(v.verify(&forged).unwrap_err(), "bad signature");
        let expired = token(
            "app-secret-0123456789",
            serde_json::json!({"sub": "u", "exp": 1000, "iss": "app"}),
        );
        assert_eq!(v.verify(&expired).unwrap_err(), "the token has expired");
        let wrong_iss = token(
            "app-secret-0123456789",
            serde_json::json!({"sub": "u", "exp": in_an_hour(), "iss": "evil"}),
        );
        assert_eq!(v.verify(&wrong_iss).unwrap_err(), "wrong issuer");
        let no_sub = token(
            "app-secret-0123456789",
            serde_json::json!({"exp": in_an_hour(), "iss": "app"}),
        );
        assert!(v.verify(&no_sub).unwrap_err().contains("sub"));
        assert!(v.verify("not.a.token").is_err());
    }
}
