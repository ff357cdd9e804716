//! Who may open a session, checked before the WebSocket upgrade: API keys and JWTs
//! (HS256 / RS256 with a required `exp`), plus an `Origin` allow-list so a page on another
//! site cannot drive the GPU through a visitor's browser.
//!
//! Both binaries use the same [`AuthConfig`] (the router's `router.auth`, the replica's
//! `server.auth`): the router is the front door, the replica can check again when it is
//! reachable without the router.
//!
//! Browsers cannot set headers on a WebSocket, so a credential is read from
//! `Authorization: Bearer <token>` or, failing that, the `access_token` query parameter.
//! Neither binary logs query strings.

use std::path::PathBuf;

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::FieldError;

/// Query parameter that carries a credential for clients that cannot set headers.
pub const TOKEN_QUERY_PARAMETER: &str = "access_token";

/// Authentication and origin policy for WebSocket upgrades. Off by default (the local demo
/// needs no keys); the Helm chart turns it on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Every upgrade must carry a valid API key or JWT; at least one of `api_keys`,
    /// `api_keys_file`, `jwt.hs256_secret` or `jwt.rs256_public_key_file` must be set.
    pub required: bool,
    /// Accepted API keys (at least 16 characters each). Several at once let keys rotate:
    /// add the new one, move clients over, remove the old one. Shown as `<redacted>` by
    /// `--check-config`.
    #[serde(serialize_with = "redacted_list")]
    pub api_keys: Vec<String>,
    /// A file with one API key per line (`#` comments allowed), e.g. a mounted Secret; read
    /// at start-up, in addition to `api_keys`.
    pub api_keys_file: Option<PathBuf>,
    /// JSON Web Tokens signed by an identity provider or a token service of your own.
    pub jwt: JwtConfig,
    /// Origins (`https://app.example.com`) whose pages may open sessions; `*` allows any.
    /// Empty: only pages served from the server's own origin. Requests without an `Origin`
    /// header (non-browser clients) are not affected; authentication covers them.
    pub allowed_origins: Vec<String>,
}

/// How JWTs are verified. A token needs a valid signature and an `exp` in the future.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret for HS256 tokens (at least 32 bytes). Shown as `<redacted>` by
    /// `--check-config`.
    #[serde(serialize_with = "redacted")]
    pub hs256_secret: Option<String>,
    /// PEM file with the RSA public key for RS256 tokens.
    pub rs256_public_key_file: Option<PathBuf>,
    /// Required `iss` claim, when set.
    pub issuer: Option<String>,
    /// Required `aud` claim, when set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            rs256_public_key_file: None,
            issuer: None,
            audience: None,
            leeway_seconds: 30,
        }
    }
}

fn redacted<S: serde::Serializer>(secret: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

fn redacted_list<S: serde::Serializer>(secrets: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(|_| "<redacted>"))
}

/// Shortest API key accepted in configuration: shorter keys can be guessed.
pub const MIN_API_KEY_CHARS: usize = 16;
/// Shortest HS256 secret accepted in configuration (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Largest leeway accepted; more would let expired tokens live on.
pub const MAX_LEEWAY_SECONDS: u64 = 300;

/// Why a request was not let in. The message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential at all.
    #[error(
        "authentication required: send `Authorization: Bearer <key or token>` or `?access_token=`"
    )]
    Missing,
    /// A credential that is neither a configured key nor a valid token.
    #[error("invalid API key or token")]
    Invalid,
    /// A token whose `exp` has passed.
    #[error("token expired")]
    Expired,
    /// A browser page from an origin that is not allowed.
    #[error("origin not allowed")]
    Origin,
}

impl AuthError {
    /// The HTTP status to answer with: 401 for credentials, 403 for a forbidden origin.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Origin => 403,
            _ => 401,
        }
    }

    /// Short label for logs and the `reason` of `framecast_requests_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_credentials",
            AuthError::Invalid => "invalid_credentials",
            AuthError::Expired => "expired_token",
            AuthError::Origin => "origin",
        }
    }

    /// Every reason, for exporting a zero series per reason up front.
    pub const REASONS: [&'static str; 4] = [
        "missing_credentials",
        "invalid_credentials",
        "expired_token",
        "origin",
    ];
}

/// Who was let in, for logs: never the credential itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is off.
    Anonymous,
    /// An API key, named by the first 8 hex digits of its SHA-256 (safe to log).
    ApiKey(String),
    /// A JWT's `sub` claim (empty when the token has none).
    Token(String),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("anonymous"),
            Principal::ApiKey(id) => write!(f, "key:{id}"),
            Principal::Token(sub) => write!(f, "jwt:{sub}"),
        }
    }
}

/// The checks an [`AuthConfig`] asks for, with keys loaded and hashed once at start-up.
#[derive(Clone)]
pub struct Authenticator {
    required: bool,
    key_hashes: Vec<[u8; 32]>,
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    origins: Vec<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("required", &self.required)
            .field("api_keys", &self.key_hashes.len())
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("allowed_origins", &self.origins)
            .finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Authenticator {
    /// Checks `config` (field names under `prefix`, e.g. `router.auth`) and loads the key
    /// file and public key it names.
    pub fn from_config(config: &AuthConfig, prefix: &str) -> Result<Self, FieldError> {
        let field = |name: &str| format!("{prefix}.{name}");
        let mut keys = config.api_keys.clone();
        if let Some(path) = &config.api_keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                FieldError::new(
                    field("api_keys_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        if let Some(short) = keys
            .iter()
            .find(|k| k.trim().chars().count() < MIN_API_KEY_CHARS)
        {
            let shown: String = short.chars().take(4).collect();
            return Err(FieldError::new(
                field("api_keys"),
                format!(
                    "the key starting `{shown}` is shorter than {MIN_API_KEY_CHARS} characters"
                ),
            ));
        }
        let hs256 = match &config.jwt.hs256_secret {
            Some(secret) if secret.len() < MIN_HS256_SECRET_BYTES => {
                return Err(FieldError::new(
                    field("jwt.hs256_secret"),
                    format!("must be at least {MIN_HS256_SECRET_BYTES} bytes"),
                ));
            }
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let rs256 = match &config.jwt.rs256_public_key_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    FieldError::new(
                        field("jwt.rs256_public_key_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Some(DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                    FieldError::new(
                        field("jwt.rs256_public_key_file"),
                        format!("{} is not an RSA public key in PEM: {e}", path.display()),
                    )
                })?)
            }
            None => None,
        };
        if config.jwt.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(FieldError::new(
                field("jwt.leeway_seconds"),
                format!("must be at most {MAX_LEEWAY_SECONDS}"),
            ));
        }
        if config.required && keys.is_empty() && hs256.is_none() && rs256.is_none() {
            return Err(FieldError::new(
                field("required"),
                "is true but no credential is configured: set api_keys, api_keys_file, \
                 jwt.hs256_secret or jwt.rs256_public_key_file",
            ));
        }
        for origin in &config.allowed_origins {
            if origin != "*" && normalize_origin(origin).is_none() {
                return Err(FieldError::new(
                    field("allowed_origins"),
                    format!("`{origin}` is not an origin like https://app.example.com or `*`"),
                ));
            }
        }
        Ok(Self {
            required: config.required,
            key_hashes: keys.iter().map(|k| sha256(k.trim().as_bytes())).collect(),
            hs256,
            rs256,
            issuer: config.jwt.issuer.clone(),
            audience: config.jwt.audience.clone(),
            leeway: config.jwt.leeway_seconds,
            origins: config
                .allowed_origins
                .iter()
                .map(|o| normalize_origin(o).unwrap_or_else(|| o.clone()))
                .collect(),
        })
    }

    /// Whether credentials are checked at all.
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// Checks one upgrade request: its origin, then (when required) its credential.
    /// `query` is the request URI's query string.
    pub fn check(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Principal, AuthError> {
        if !self.origin_allowed(headers) {
            return Err(AuthError::Origin);
        }
        if !self.required {
            return Ok(Principal::Anonymous);
        }
        let token = bearer(headers)
            .or_else(|| query.and_then(query_token))
            .ok_or(AuthError::Missing)?;
        self.verify(&token)
    }

    /// Verifies one credential: a configured API key, else a JWT.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let hash = sha256(token.as_bytes());
        // Every key is compared, in constant time, so timing says nothing about which matched.
        let mut matched = None;
        for (i, key) in self.key_hashes.iter().enumerate() {
            if bool::from(key.ct_eq(&hash)) {
                matched = Some(i);
            }
        }
        if matched.is_some() {
            let id: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
            return Ok(Principal::ApiKey(id));
        }
        if token.split('.').count() == 3 {
            return self.verify_jwt(token);
        }
        Err(AuthError::Invalid)
    }

    fn verify_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or(AuthError::Invalid)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        match jsonwebtoken::decode::<serde_json::Value>(token, key, &validation) {
            Ok(data) => Ok(Principal::Token(
                data.claims["sub"].as_str().unwrap_or_default().to_string(),
            )),
            Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                Err(AuthError::Expired)
            }
            Err(_) => Err(AuthError::Invalid),
        }
    }

    /// Whether a browser page's `Origin` may open a session (requests without one may).
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(http::header::ORIGIN) else {
            return true;
        };
        let Some(origin) = origin.to_str().ok().and_then(normalize_origin) else {
            // `null` (sandboxed frames, file://) and garbage.
            return self.origins.iter().any(|o| o == "*");
        };
        if self.origins.iter().any(|o| o == "*" || *o == origin) {
            return true;
        }
        // Same origin: the page came from the host the request is addressed to.
        let host = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.to_ascii_lowercase());
        host.is_some_and(|host| origin_authority(&origin) == Some(host.as_str()))
    }
}

/// `scheme://host[:port]` in lower case with default ports removed, or `None` when `s` is
/// not an origin.
fn normalize_origin(s: &str) -> Option<String> {
    let url = url::Url::parse(s.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.path() != "/" && !url.path().is_empty() {
        return None;
    }
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// The `host[:port]` of a normalized origin, as a `Host` header would carry it.
fn origin_authority(origin: &str) -> Option<&str> {
    origin.split_once("://").map(|(_, authority)| authority)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn query_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == TOKEN_QUERY_PARAMETER)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// Counts one refused request under `framecast_requests_refused_total{reason}`.
pub fn record_refusal(error: &AuthError) {
    metrics::counter!("framecast_requests_refused_total", "reason" => error.reason()).increment(1);
}

/// Describes `framecast_requests_refused_total` and exports a zero series per reason, so
/// alerts see the series before the first refusal.
pub fn register_refusal_metric() {
    metrics::describe_counter!(
        "framecast_requests_refused_total",
        "WebSocket upgrades refused before a session started, by reason (credentials, origin)."
    );
    for reason in AuthError::REASONS {
        metrics::counter!("framecast_requests_refused_total", "reason" => reason).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const KEY: &str = "fc_live_0123456789abcdef";
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth(config: AuthConfig) -> Authenticator {
        Authenticator::from_config(&config, "router.auth").unwrap()
    }

    fn keyed() -> Authenticator {
        auth(AuthConfig {
            required: true,
            api_keys: vec![KEY.into()],
            jwt: JwtConfig {
                hs256_secret: Some(SECRET.into()),
                ..JwtConfig::default()
            },
            ..AuthConfig::default()
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn off_by_default_lets_everyone_in() {
        let a = auth(AuthConfig::default());
        assert_eq!(a.check(&HeaderMap::new(), None), Ok(Principal::Anonymous));
    }

    #[test]
    fn api_keys_come_from_the_header_or_the_query() {
        let a = keyed();
        let h = headers(&[("authorization", &format!("Bearer {KEY}"))]);
        assert!(matches!(a.check(&h, None), Ok(Principal::ApiKey(_))));
        let q = format!("preset=x&access_token={KEY}");
        assert!(matches!(
            a.check(&HeaderMap::new(), Some(&q)),
            Ok(Principal::ApiKey(_))
        ));
        assert_eq!(a.check(&HeaderMap::new(), None), Err(AuthError::Missing));
        let wrong = headers(&[("authorization", "Bearer fc_live_0123456789abcdeX")]);
        assert_eq!(a.check(&wrong, None), Err(AuthError::Invalid));
        let basic = headers(&[("authorization", &format!("Basic {KEY}"))]);
        assert_eq!(a.check(&basic, None), Err(AuthError::Missing));
    }

    #[test]
    fn hs256_tokens_need_the_secret_and_a_future_exp() {
        let a = keyed();
        let good = hs256(
            serde_json::json!({"sub": "alice", "exp": now() + 60}),
            SECRET,
        );
        assert_eq!(a.verify(&good), Ok(Principal::Token("alice".into())));
        let expired = hs256(serde_json::json!({"sub": "a", "exp": now() - 3600}), SECRET);
        assert_eq!(a.verify(&expired), Err(AuthError::Expired));
        let no_exp = hs256(serde_json::json!({"sub": "a"}), SECRET);
        assert_eq!(a.verify(&no_exp), Err(AuthError::Invalid));
        let forged = hs256(
            serde_json::json!({"sub": "a", "exp": now() + 60}),
            "another-secret-another-secret-xx",
        );
        assert_eq!(a.verify(&forged), Err(AuthError::Invalid));
        // `alg: none` and algorithms with no configured key are refused.
        let none = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", "eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ"
        );
        assert_eq!(a.verify(&none), Err(AuthError::Invalid));
    }

    #[test]
    fn rs256_tokens_are_checked_with_the_public_key() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let a = auth(AuthConfig {
            required: true,
            jwt: JwtConfig {
                rs256_public_key_file: Some(fixtures.join("jwt-test-rs256-public.pem")),
                ..JwtConfig::default()
            },
            ..AuthConfig::default()
        });
        let private = std::fs::read(fixtures.join("jwt-test-rs256-private.pem")).unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &serde_json::json!({"sub": "svc", "exp": now() + 60}),
            &EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap();
        assert_eq!(a.verify(&token), Ok(Principal::Token("svc".into())));
        // An HS256 token is refused when only RS256 is configured (no algorithm confusion).
        let hs = hs256(serde_json::json!({"exp": now() + 60}), SECRET);
        assert_eq!(a.verify(&hs), Err(AuthError::Invalid));
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let a = auth(AuthConfig {
            required: true,
            jwt: JwtConfig {
                hs256_secret: Some(SECRET.into()),
                issuer: Some("https://id.example".into()),
                audience: Some("framecast".into()),
                ..JwtConfig::default()
            },
            ..AuthConfig::default()
        });
        let claims = |iss: &str, aud: &str| {
            hs256(
                serde_json::json!({"iss": iss, "aud": aud, "exp": now() + 60}),
                SECRET,
            )
        };
        assert!(a.verify(&claims("https://id.example", "framecast")).is_ok());
        assert!(a.verify(&claims("https://evil", "framecast")).is_err());
        assert!(a.verify(&claims("https://id.example", "other")).is_err());
    }

    #[test]
    fn origins_same_site_by_default_or_as_listed() {
        let a = auth(AuthConfig::default());
        let same = headers(&[
            ("origin", "http://localhost:9000"),
            ("host", "localhost:9000"),
        ]);
        assert!(a.origin_allowed(&same));
        let other = headers(&[
            ("origin", "https://evil.example"),
            ("host", "localhost:9000"),
        ]);
        assert_eq!(a.check(&other, None), Err(AuthError::Origin));
        assert!(a.origin_allowed(&headers(&[("host", "localhost:9000")])));
        let listed = auth(AuthConfig {
            allowed_origins: vec!["https://App.example.com/".into()],
            ..AuthConfig::default()
        });
        let app = headers(&[
            ("origin", "https://app.example.com"),
            ("host", "api.example.com"),
        ]);
        assert!(listed.origin_allowed(&app));
        assert!(!listed.origin_allowed(&other));
        let any = auth(AuthConfig {
            allowed_origins: vec!["*".into()],
            ..AuthConfig::default()
        });
        assert!(any.origin_allowed(&other));
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let err = |config: AuthConfig| {
            Authenticator::from_config(&config, "router.auth")
                .unwrap_err()
                .field
        };
        assert_eq!(
            err(AuthConfig {
                required: true,
                ..AuthConfig::default()
            }),
            "router.auth.required"
        );
        assert_eq!(
            err(AuthConfig {
                api_keys: vec!["short".into()],
                ..AuthConfig::default()
            }),
            "router.auth.api_keys"
        );
        assert_eq!(
            err(AuthConfig {
                jwt: JwtConfig {
                    hs256_secret: Some("short".into()),
                    ..JwtConfig::default()
                },
                ..AuthConfig::default()
            }),
            "router.auth.jwt.hs256_secret"
        );
        assert_eq!(
            err(AuthConfig {
                api_keys_file: Some("/nonexistent/keys".into()),
                ..AuthConfig::default()
            }),
            "router.auth.api_keys_file"
        );
        assert_eq!(
            err(AuthConfig {
                allowed_origins: vec!["app.example.com".into()],
                ..AuthConfig::default()
            }),
            "router.auth.allowed_origins"
        );
    }

    #[test]
    fn secrets_never_serialize() {
        let config = AuthConfig {
            api_keys: vec![KEY.into()],
            jwt: JwtConfig {
                hs256_secret: Some(SECRET.into()),
                ..JwtConfig::default()
            },
            ..AuthConfig::default()
        };
        let shown = serde_json::to_string(&config).unwrap();
        assert!(!shown.contains(KEY) && !shown.contains(SECRET), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn key_files_hold_one_key_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(
            &path,
            format!("# rotated 2026-11\n{KEY}\n\nfc_next_aaaaaaaaaaaaaaaa\n"),
        )
        .unwrap();
        let a = auth(AuthConfig {
            required: true,
            api_keys_file: Some(path),
            ..AuthConfig::default()
        });
        assert!(a.verify(KEY).is_ok());
        assert!(a.verify("fc_next_aaaaaaaaaaaaaaaa").is_ok());
        assert!(a.verify("# rotated 2026-11").is_err());
    }
}
