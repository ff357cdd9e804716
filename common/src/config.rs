//! Layered configuration: built-in defaults < a YAML file < `FRAMECAST_*` environment variables.
//!
//! Both binaries load their settings through [`LayeredConfig`], so operators learn one rule:
//! every field of a file can be overridden by an environment variable named after its path,
//! `__` between levels (`FRAMECAST_REPLICA__SERVER__PORT=8001` overrides `server.port`).
//! Defaults live in the settings types themselves (`#[serde(default)]`), so a file only
//! needs the fields it changes.
//!
//! Every error names where the bad value came from (the file or the environment variable)
//! and the dotted path of the field, because "invalid type" alone sends operators hunting.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;

/// Separates levels in environment variable names and between the prefix and the path.
const ENV_SEPARATOR: &str = "__";

/// A configuration that could not be loaded; the message names the source and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, unreadable or not valid YAML.
    #[error("cannot read configuration file {path}: {message}")]
    Read {
        /// The file given with `--config`.
        path: PathBuf,
        /// What went wrong, as the YAML parser or the file system said it.
        message: String,
    },
    /// A field has a value of the wrong type, an unknown name, or fails validation.
    #[error("invalid configuration in {origin}: field `{field}`: {message}")]
    Invalid {
        /// The file or environment variable the bad value came from.
        origin: String,
        /// Dotted path of the field, such as `server.port`.
        field: String,
        /// Why the value was rejected.
        message: String,
    },
}

/// A field that fails a check no type can express (a port range, a URL shape, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, such as `router.health_check.interval_seconds`.
    pub field: String,
    /// Why the value was rejected.
    pub message: String,
}

impl FieldError {
    /// Rejects `field` because of `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Rejects `value` below `min` with "must be at least {min}".
pub fn at_least<T: PartialOrd + fmt::Display>(
    field: &str,
    value: T,
    min: T,
) -> Result<(), FieldError> {
    if value >= min {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("must be at least {min}")))
    }
}

/// Rejects 0 (counts, thresholds and whole seconds where 0 would never fire or never admit).
pub fn at_least_one<T: PartialOrd + fmt::Display + From<u8>>(
    field: &str,
    value: T,
) -> Result<(), FieldError> {
    at_least(field, value, T::from(1))
}

/// Rejects `value` outside `lo..=hi` (both ends allowed) with "must be between {lo} and {hi}".
pub fn in_range<T: PartialOrd + fmt::Display>(
    field: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), FieldError> {
    if lo <= value && value <= hi {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be between {lo} and {hi}"),
        ))
    }
}

/// The longest time any setting may name: 100 years, in seconds. Longer means "never" to a
/// person, but a timer that far out overflows the arithmetic that builds deadlines
/// (`Instant + Duration` and `Duration::from_secs_f64` panic), so it is refused at load time.
pub const MAX_SECONDS: u64 = 100 * 365 * 24 * 60 * 60;

/// Rejects a duration in seconds that is 0, negative, NaN, infinite or above
/// [`MAX_SECONDS`], quoting the value.
pub fn positive_seconds(field: &str, value: f64) -> Result<(), FieldError> {
    if !(value.is_finite() && value > 0.0) {
        Err(FieldError::new(
            field,
            format!("must be greater than 0 (got {value})"),
        ))
    } else if value > MAX_SECONDS as f64 {
        Err(too_long(field, value))
    } else {
        Ok(())
    }
}

/// Rejects a whole number of seconds above [`MAX_SECONDS`] (0 is left to the caller).
pub fn at_most_max_seconds(field: &str, value: u64) -> Result<(), FieldError> {
    if value > MAX_SECONDS {
        Err(too_long(field, value))
    } else {
        Ok(())
    }
}

fn too_long(field: &str, value: impl fmt::Display) -> FieldError {
    FieldError::new(
        field,
        format!("must be at most {MAX_SECONDS} seconds (100 years; got {value})"),
    )
}

/// Rejects a string that is empty or only whitespace.
pub fn not_empty(field: &str, value: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        Err(FieldError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// Settings types check what serde cannot (ranges, cross-field rules) after loading.
pub trait Validate {
    /// Returns the first field that is wrong, so the binary can stop with a precise message.
    fn validate(&self) -> Result<(), FieldError>;
}

/// Loads one settings type from its layers.
///
/// ```
/// use framecast_common::config::{LayeredConfig, Validate, FieldError};
///
/// #[derive(Debug, Default, serde::Deserialize)]
/// #[serde(default, deny_unknown_fields)]
/// struct Settings { port: u16 }
/// impl Validate for Settings {
///     fn validate(&self) -> Result<(), FieldError> { Ok(()) }
/// }
///
/// let settings: Settings = LayeredConfig::new("FRAMECAST_EXAMPLE")
///     .env_vars([("FRAMECAST_EXAMPLE__PORT".to_string(), "8001".to_string())])
///     .load()
///     .unwrap();
/// assert_eq!(settings.port, 8001);
/// ```
#[derive(Debug, Clone)]
pub struct LayeredConfig {
    env_prefix: String,
    file: Option<PathBuf>,
    env_vars: Option<HashMap<String, String>>,
}

impl LayeredConfig {
    /// Starts a loader whose environment overrides begin with `env_prefix` followed by `__`.
    pub fn new(env_prefix: impl Into<String>) -> Self {
        Self {
            env_prefix: env_prefix.into(),
            file: None,
            env_vars: None,
        }
    }

    /// Adds the YAML file layer; `None` keeps only defaults and the environment.
    pub fn file(mut self, path: Option<impl AsRef<Path>>) -> Self {
        self.file = path.map(|p| p.as_ref().to_path_buf());
        self
    }

    /// Reads overrides from this map instead of the process environment (for tests, which
    /// must not mutate the environment of a multi-threaded process).
    pub fn env_vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env_vars = Some(vars.into_iter().collect());
        self
    }

    /// Merges the layers, deserializes them and validates the result.
    pub fn load<T: DeserializeOwned + Validate>(&self) -> Result<T, ConfigError> {
        let env_vars = self.env_vars.clone().unwrap_or_else(|| {
            std::env::vars()
                .filter(|(k, _)| k.starts_with(&self.env_prefix))
                .collect()
        });

        let mut builder = Config::builder();
        if let Some(path) = &self.file {
            builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Yaml));
        }
        builder = builder.add_source(
            Environment::with_prefix(&self.env_prefix)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .try_parsing(true)
                .source(Some(env_vars.clone())),
        );
        let merged = builder.build().map_err(|e| self.read_error(e))?;

        let settings: T = serde_path_to_error::deserialize(merged).map_err(|e| {
            let field = e.path().to_string();
            let message = strip_config_location(&e.inner().to_string());
            self.invalid(&env_vars, field, message)
        })?;
        settings
            .validate()
            .map_err(|e| self.invalid(&env_vars, e.field, e.message))?;
        Ok(settings)
    }

    /// The environment variable that overrides `field` (for messages and docs).
    pub fn env_var_for(&self, field: &str) -> String {
        format!(
            "{}{}{}",
            self.env_prefix,
            ENV_SEPARATOR,
            field.replace('.', ENV_SEPARATOR).to_uppercase()
        )
    }

    fn read_error(&self, err: config::ConfigError) -> ConfigError {
        match &self.file {
            Some(path) => ConfigError::Read {
                path: path.clone(),
                message: err.to_string(),
            },
            // Without a file only the environment layer can fail to build.
            None => ConfigError::Invalid {
                origin: "the environment".into(),
                field: String::new(),
                message: err.to_string(),
            },
        }
    }

    /// Attributes a bad field to the environment variable that set it, else to the file.
    fn invalid(
        &self,
        env_vars: &HashMap<String, String>,
        field: String,
        message: String,
    ) -> ConfigError {
        let var = self.env_var_for(&field);
        let origin = if !field.is_empty() && env_vars.contains_key(&var) {
            format!("environment variable {var}")
        } else if let Some(path) = &self.file {
            path.display().to_string()
        } else {
            "built-in defaults".to_string()
        };
        ConfigError::Invalid {
            origin,
            field: if field.is_empty() || field == "." {
                "(top level)".into()
            } else {
                field
            },
            message,
        }
    }
}

/// The `config` crate appends " for key `x` in file" to type errors; we say both ourselves.
fn strip_config_location(message: &str) -> String {
    match message.find(" for key `") {
        Some(idx) => message[..idx].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::io::Write;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Server {
        host: String,
        port: u16,
    }

    impl Default for Server {
        fn default() -> Self {
            Self {
                host: "0.0.0.0".into(),
                port: 8000,
            }
        }
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Streaming {
        session_timeout_seconds: u64,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        server: Server,
        streaming: Streaming,
    }

    impl Validate for Settings {
        fn validate(&self) -> Result<(), FieldError> {
            if self.streaming.session_timeout_seconds > 3600 {
                return Err(FieldError::new(
                    "streaming.session_timeout_seconds",
                    "must be at most 3600",
                ));
            }
            Ok(())
        }
    }

    fn yaml(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn loader() -> LayeredConfig {
        LayeredConfig::new("FRAMECAST_TEST").env_vars(env(&[]))
    }

    #[test]
    fn defaults_apply_without_file_or_env() {
        let s: Settings = loader().load().unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.server.port, 8000);
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let f = yaml("server:\n  port: 8100\nstreaming:\n  session_timeout_seconds: 30\n");
        let s: Settings = loader().file(Some(f.path())).load().unwrap();
        assert_eq!(s.server.port, 8100);
        assert_eq!(
            s.server.host, "0.0.0.0",
            "fields absent from the file keep defaults"
        );
        assert_eq!(s.streaming.session_timeout_seconds, 30);

        let s: Settings = loader()
            .file(Some(f.path()))
            .env_vars(env(&[
                ("FRAMECAST_TEST__SERVER__PORT", "8001"),
                ("FRAMECAST_TEST__STREAMING__SESSION_TIMEOUT_SECONDS", "45"),
            ]))
            .load()
            .unwrap();
        assert_eq!(s.server.port, 8001);
        assert_eq!(s.streaming.session_timeout_seconds, 45);
    }

    #[test]
    fn unrelated_env_vars_are_ignored() {
        let s: Settings = loader()
            .env_vars(env(&[
                ("FRAMECAST_TESTX", "1"),
                ("FRAMECAST_OTHER__SERVER__PORT", "1"),
            ]))
            .load()
            .unwrap();
        assert_eq!(s.server.port, 8000);
    }

    #[test]
    fn wrong_type_in_file_names_file_and_field() {
        let f = yaml("server:\n  port: eighty\n");
        let err = loader()
            .file(Some(f.path()))
            .load::<Settings>()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
        assert!(msg.contains("`server.port`"), "{msg}");
        assert!(matches!(err, ConfigError::Invalid { ref field, .. } if field == "server.port"));
    }

    #[test]
    fn wrong_type_in_env_names_the_variable() {
        let f = yaml("server:\n  port: 8100\n");
        let err = loader()
            .file(Some(f.path()))
            .env_vars(env(&[("FRAMECAST_TEST__SERVER__PORT", "not-a-port")]))
            .load::<Settings>()
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("environment variable FRAMECAST_TEST__SERVER__PORT"),
            "{msg}"
        );
        assert!(msg.contains("`server.port`"), "{msg}");
    }

    #[test]
    fn out_of_range_value_is_rejected() {
        let f = yaml("server:\n  port: 70000\n");
        let err = loader()
            .file(Some(f.path()))
            .load::<Settings>()
            .unwrap_err();
        assert!(err.to_string().contains("`server.port`"), "{err}");
    }

    #[test]
    fn unknown_field_is_rejected_with_its_path() {
        let f = yaml("server:\n  prot: 8100\n");
        let err = loader()
            .file(Some(f.path()))
            .load::<Settings>()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown field `prot`"), "{msg}");
        assert!(
            msg.contains("`server`") || msg.contains("`server.prot`"),
            "{msg}"
        );
    }

    #[test]
    fn validation_failure_names_the_field() {
        let f = yaml("streaming:\n  session_timeout_seconds: 99999\n");
        let err = loader()
            .file(Some(f.path()))
            .load::<Settings>()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`streaming.session_timeout_seconds`"), "{msg}");
        assert!(msg.contains("at most 3600"), "{msg}");
    }

    #[test]
    fn missing_file_is_a_read_error_naming_it() {
        let err = loader()
            .file(Some("/nonexistent/framecast.yaml"))
            .load::<Settings>()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(
            err.to_string().contains("/nonexistent/framecast.yaml"),
            "{err}"
        );
    }

    #[test]
    fn malformed_yaml_is_a_read_error_naming_the_file() {
        let f = yaml("server: [port: 1\n");
        let err = loader()
            .file(Some(f.path()))
            .load::<Settings>()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&f.path().display().to_string()),
            "{err}"
        );
    }

    fn message(result: Result<(), FieldError>) -> Option<String> {
        result.err().map(|e| format!("{e}"))
    }

    #[test]
    fn at_least_one_rejects_only_zero() {
        assert_eq!(
            message(at_least_one("a.b", 0u32)).as_deref(),
            Some("field `a.b`: must be at least 1")
        );
        assert_eq!(message(at_least_one("a.b", 1u32)), None);
        assert_eq!(message(at_least_one("a.b", u64::MAX)), None);
        assert!(at_least_one("a.b", 0usize).is_err());
        assert!(at_least_one("a.b", 0u64).is_err());
    }

    #[test]
    fn at_least_quotes_the_minimum_and_allows_it() {
        let err = at_least("streaming.max_message_bytes", 1023usize, 1024).unwrap_err();
        assert_eq!(
            err,
            FieldError::new("streaming.max_message_bytes", "must be at least 1024")
        );
        assert_eq!(at_least("x", 1024usize, 1024), Ok(()));
        assert_eq!(at_least("x", 1025usize, 1024), Ok(()));
    }

    #[test]
    fn in_range_includes_both_ends() {
        assert_eq!(in_range("fps", 1u32, 1, 120), Ok(()));
        assert_eq!(in_range("fps", 120u32, 1, 120), Ok(()));
        assert_eq!(
            in_range("fps", 0u32, 1, 120),
            Err(FieldError::new("fps", "must be between 1 and 120"))
        );
        assert_eq!(
            in_range("ms", 10_001u32, 40, 10_000),
            Err(FieldError::new("ms", "must be between 40 and 10000"))
        );
    }

    #[test]
    fn positive_seconds_rejects_zero_negative_and_non_finite() {
        assert_eq!(positive_seconds("t", 0.5), Ok(()));
        assert_eq!(
            positive_seconds("t", 0.0),
            Err(FieldError::new("t", "must be greater than 0 (got 0)"))
        );
        assert_eq!(
            positive_seconds("t", -1.5),
            Err(FieldError::new("t", "must be greater than 0 (got -1.5)"))
        );
        assert!(positive_seconds("t", f64::NAN).is_err());
        assert!(positive_seconds("t", f64::INFINITY).is_err());
    }

    #[test]
    fn seconds_beyond_a_century_are_rejected() {
        // 1e20 s passed `positive_seconds` once, then panicked in `Duration::from_secs_f64`.
        assert_eq!(positive_seconds("t", MAX_SECONDS as f64), Ok(()));
        assert_eq!(
            positive_seconds("t", 1e20),
            Err(FieldError::new(
                "t",
                "must be at most 3153600000 seconds (100 years; got 100000000000000000000)"
            ))
        );
        assert!(positive_seconds("t", f64::MAX).is_err());
        assert_eq!(at_most_max_seconds("t", 0), Ok(()));
        assert_eq!(at_most_max_seconds("t", MAX_SECONDS), Ok(()));
        assert!(at_most_max_seconds("t", MAX_SECONDS + 1).is_err());
        assert!(at_most_max_seconds("t", u64::MAX).is_err());
        let far = std::time::Instant::now() + std::time::Duration::from_secs(MAX_SECONDS);
        assert!(
            far.checked_add(std::time::Duration::from_secs(MAX_SECONDS))
                .is_some()
        );
    }

    #[test]
    fn not_empty_treats_whitespace_as_empty() {
        assert_eq!(not_empty("host", "0.0.0.0"), Ok(()));
        assert_eq!(
            not_empty("host", ""),
            Err(FieldError::new("host", "must not be empty"))
        );
        assert!(not_empty("host", " \t").is_err());
    }

    #[test]
    fn env_var_names_follow_field_paths() {
        let l = LayeredConfig::new("FRAMECAST_REPLICA");
        assert_eq!(
            l.env_var_for("server.port"),
            "FRAMECAST_REPLICA__SERVER__PORT"
        );
    }
}
