//! End-user JSON Web Tokens: HS256 with `auth.jwt.hs256_secret`, RS256 and ES256
//! with the PEM public keys of `auth.jwt.public_key_files` (parsed once, at start).
//! A token is checked against the keys of the algorithm its header names; `none`
//! and every other algorithm are refused. `exp` and `sub` are required, `nbf` is
//! honoured, both with `auth.jwt.leeway_s`; `iss` and `aud` are checked when
//! configured. `sub` is the user id (a canonical decimal, or a JSON integer).
//!
//! One crypto backend is compiled in (jsonwebtoken's `rust_crypto`), and
//! [`install_crypto`] makes it the process default before the first verification,
//! so jsonwebtoken never has to guess (it panics at the first `decode` when it
//! cannot).

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{AccessError, Invalid};
use crate::config::JwtSettings;
use crate::domain::UserId;

/// Shortest accepted HS256 secret, in bytes (the hash's output size, RFC 7518 3.2).
pub const MIN_HS256_SECRET: usize = 32;

/// Makes jsonwebtoken's RustCrypto provider the process default (idempotent).
pub fn install_crypto() {
    // Err means a provider is installed already: the same one, as this crate only
    // compiles in `rust_crypto`.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

/// The claims readstate reads; the signature and time claims are checked by
/// jsonwebtoken.
#[derive(Deserialize)]
struct Claims {
    /// Checked here rather than as a required claim: jsonwebtoken only takes a
    /// string `sub`, and a JSON integer is accepted too.
    #[serde(default)]
    sub: Option<serde_json::Value>,
}

/// Keys and rules for one server's tokens.
pub struct Verifier {
    hs256: Option<(Vec<DecodingKey>, Validation)>,
    rs256: Option<(Vec<DecodingKey>, Validation)>,
    es256: Option<(Vec<DecodingKey>, Validation)>,
}

impl Verifier {
    /// Loads the keys of `settings`.
    ///
    /// # Errors
    /// [`AccessError`] for a short secret, or a key file that cannot be read or is
    /// not an RSA or P-256 public key in PEM.
    pub fn new(settings: &JwtSettings) -> Result<Self, AccessError> {
        install_crypto();
        let validation = |alg: Algorithm| {
            let mut v = Validation::new(alg);
            v.leeway = settings.leeway_s;
            v.validate_exp = true;
            v.validate_nbf = true;
            let mut required = vec!["exp"];
            if let Some(issuer) = &settings.issuer {
                v.set_issuer(&[issuer]);
                required.push("iss");
            }
            match &settings.audience {
                Some(audience) => {
                    v.set_audience(&[audience]);
                    required.push("aud");
                }
                None => v.validate_aud = false,
            }
            v.set_required_spec_claims(&required);
            v
        };
        let hs256 = match &settings.hs256_secret {
            Some(secret) if secret.expose().len() < MIN_HS256_SECRET => {
                return Err(AccessError::new(
                    "auth.jwt.hs256_secret",
                    format!("must be at least {MIN_HS256_SECRET} bytes"),
                ));
            }
            Some(secret) => Some((
                vec![DecodingKey::from_secret(secret.expose().as_bytes())],
                validation(Algorithm::HS256),
            )),
            None => None,
        };
        let (mut rsa, mut ec) = (Vec::new(), Vec::new());
        for (i, path) in settings.public_key_files.iter().enumerate() {
            let key = format!("auth.jwt.public_key_files[{i}]");
            let pem = std::fs::read(path).map_err(|e| {
                AccessError::new(&key, format!("cannot read {}: {e}", path.display()))
            })?;
            if let Ok(decoding) = DecodingKey::from_rsa_pem(&pem) {
                rsa.push(decoding);
            } else if let Ok(decoding) = DecodingKey::from_ec_pem(&pem) {
                ec.push(decoding);
            } else {
                return Err(AccessError::new(
                    key,
                    format!(
                        "{} is not an RSA or EC public key in PEM (BEGIN PUBLIC KEY)",
                        path.display()
                    ),
                ));
            }
        }
        let keyed =
            |keys: Vec<DecodingKey>, alg| (!keys.is_empty()).then(|| (keys, validation(alg)));
        Ok(Self {
            hs256,
            rs256: keyed(rsa, Algorithm::RS256),
            es256: keyed(ec, Algorithm::ES256),
        })
    }

    /// The user `token` is for.
    ///
    /// # Errors
    /// [`Invalid`]: why the token is refused.
    pub fn verify(&self, token: &str) -> Result<UserId, Invalid> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| header_error(token))?;
        let configured = match header.alg {
            Algorithm::HS256 => &self.hs256,
            Algorithm::RS256 => &self.rs256,
            Algorithm::ES256 => &self.es256,
            _ => &None,
        };
        let Some((keys, validation)) = configured else {
            return Err(Invalid::WrongAlgorithm);
        };
        let mut outcome = Err(Invalid::BadSignature);
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, validation) {
                Ok(data) => {
                    outcome = data
                        .claims
                        .sub
                        .as_ref()
                        .map_or(Err(Invalid::BadClaims), subject);
                    break;
                }
                Err(e) => match classify(e.kind()) {
                    // Another key of the same algorithm may have signed it.
                    Invalid::BadSignature => continue,
                    other => {
                        outcome = Err(other);
                        break;
                    }
                },
            }
        }
        outcome
    }
}

/// Why a header did not decode: an algorithm jsonwebtoken does not know (`none`
/// among them) is the wrong algorithm; anything else is malformed.
fn header_error(token: &str) -> Invalid {
    #[derive(Deserialize)]
    struct Alg {
        alg: String,
    }
    let header = token.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice::<Alg>(&json).ok())
        .map_or(Invalid::Malformed, |header| match header.alg.is_empty() {
            true => Invalid::Malformed,
            false => Invalid::WrongAlgorithm,
        })
}

fn classify(kind: &ErrorKind) -> Invalid {
    match kind {
        ErrorKind::InvalidSignature => Invalid::BadSignature,
        ErrorKind::ExpiredSignature => Invalid::Expired,
        ErrorKind::ImmatureSignature => Invalid::NotYetValid,
        ErrorKind::InvalidIssuer => Invalid::WrongIssuer,
        ErrorKind::InvalidAudience => Invalid::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Invalid::WrongAlgorithm,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => Invalid::BadClaims,
        _ => Invalid::Malformed,
    }
}

/// `sub` as a user id: a canonical decimal string, or a JSON integer.
fn subject(sub: &serde_json::Value) -> Result<UserId, Invalid> {
    let id = match sub {
        serde_json::Value::String(text) => UserId::parse(text).ok(),
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| UserId::new(n).ok()),
        _ => None,
    };
    id.ok_or(Invalid::BadClaims)
}
