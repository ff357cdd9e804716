//! What both binaries do with their configuration before anything else: load it or stop
//! with exit code 2, and answer `--check-config`.
//!
//! Keeping this in one place keeps the two binaries' messages, exit codes and
//! `--check-config` output identical, which operators and the CLI tests rely on.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{LayeredConfig, Validate};

/// Exit status of a binary whose configuration cannot be loaded (1 is left for failures
/// after start-up, so scripts can tell "fix the file" from "it crashed").
pub const EXIT_INVALID_CONFIG: u8 = 2;

/// Loads defaults < `file` < `<env_prefix>__*` environment variables; the error is the line
/// [`load_or_exit`] prints: `<binary>: <what is wrong, naming the source and the field>`.
pub fn load<T: DeserializeOwned + Validate>(
    binary: &str,
    file: Option<&Path>,
    env_prefix: &str,
) -> Result<T, String> {
    load_layers(binary, LayeredConfig::new(env_prefix).file(file))
}

fn load_layers<T: DeserializeOwned + Validate>(
    binary: &str,
    layers: LayeredConfig,
) -> Result<T, String> {
    layers.load().map_err(|err| format!("{binary}: {err}"))
}

/// [`load`], or print its error to stderr and exit the process with [`EXIT_INVALID_CONFIG`].
///
/// Call it first thing in `main`, before any thread or server is started, since it does
/// not return on error. The binaries' CLI tests (`tests/tests/cli.rs`) see the exit code.
pub fn load_or_exit<T: DeserializeOwned + Validate>(
    binary: &str,
    file: Option<&Path>,
    env_prefix: &str,
) -> T {
    match load(binary, file, env_prefix) {
        Ok(settings) => settings,
        Err(line) => {
            eprintln!("{line}");
            std::process::exit(EXIT_INVALID_CONFIG.into())
        }
    }
}

/// The effective settings as `--check-config` prints them: pretty JSON, no trailing newline.
pub fn effective_settings_json<T: Serialize>(settings: &T) -> String {
    serde_json::to_string_pretty(settings).expect("settings serialize")
}

/// Answers `--check-config`: prints the effective settings to stdout and returns success
/// for `main` to exit with.
pub fn check_config<T: Serialize>(settings: &T) -> ExitCode {
    println!("{}", effective_settings_json(settings));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FieldError;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        port: u16,
        threshold: u32,
    }

    impl Validate for Settings {
        fn validate(&self) -> Result<(), FieldError> {
            crate::config::at_least_one("threshold", self.threshold)
        }
    }

    const PREFIX: &str = "FRAMECAST_STARTUP_TEST";

    fn yaml(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn a_bad_file_names_the_binary_the_file_and_the_field() {
        let f = yaml("port: 8000\nthreshold: 0\n");
        let err = load::<Settings>("framecast-test", Some(f.path()), PREFIX).unwrap_err();
        assert_eq!(
            err,
            format!(
                "framecast-test: invalid configuration in {}: field `threshold`: must be at least 1",
                f.path().display()
            )
        );
    }

    #[test]
    fn a_bad_environment_variable_is_named() {
        let f = yaml("port: 8000\nthreshold: 1\n");
        let layers = LayeredConfig::new(PREFIX).file(Some(f.path())).env_vars([(
            "FRAMECAST_STARTUP_TEST__PORT".to_string(),
            "ninety".to_string(),
        )]);
        let err = load_layers::<Settings>("framecast-test", layers).unwrap_err();
        assert!(
            err.starts_with(
                "framecast-test: invalid configuration in environment variable \
                 FRAMECAST_STARTUP_TEST__PORT: field `port`: "
            ),
            "{err}"
        );
    }

    #[test]
    fn environment_variables_override_the_file() {
        let f = yaml("port: 8100\nthreshold: 1\n");
        let layers = LayeredConfig::new(PREFIX).file(Some(f.path())).env_vars([(
            "FRAMECAST_STARTUP_TEST__PORT".to_string(),
            "8001".to_string(),
        )]);
        let s: Settings = load_layers("framecast-test", layers).unwrap();
        assert_eq!(
            s,
            Settings {
                port: 8001,
                threshold: 1
            }
        );
    }

    #[test]
    fn effective_settings_are_pretty_json() {
        let s = Settings {
            port: 9001,
            threshold: 3,
        };
        assert_eq!(
            effective_settings_json(&s),
            "{\n  \"port\": 9001,\n  \"threshold\": 3\n}"
        );
    }

    #[test]
    fn check_config_succeeds() {
        assert_eq!(check_config(&Settings::default()), ExitCode::SUCCESS);
    }
}
