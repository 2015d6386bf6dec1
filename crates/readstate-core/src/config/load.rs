//! Loading: defaults, then the TOML file, then `READSTATE_` variables (figment),
//! with errors that name the key and where its value came from.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{CONFIG_PATH_ENV, DATABASE_URL_ENV, ENV_PREFIX, ENV_SOURCE_NAME, ENV_SPLIT, Settings};

/// A configuration that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {cause}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why it could not be read.
        cause: std::io::Error,
    },
    /// A key is unknown, has a value of the wrong type, or fails validation.
    #[error("{}", describe(key, message, origin.as_deref()))]
    Invalid {
        /// Dotted key path such as `cache.max_bytes`; empty when the whole source is malformed.
        key: String,
        /// What is wrong, in lowercase without a trailing period.
        message: String,
        /// Where the value came from, e.g. `environment variable READSTATE_CACHE__MAX_BYTES`.
        origin: Option<String>,
    },
}

impl ConfigError {
    /// The dotted key path the error is about, when it concerns one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } if !key.is_empty() => Some(key),
            _ => None,
        }
    }

    pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
            origin: None,
        }
    }
}

fn describe(key: &str, message: &str, origin: Option<&str>) -> String {
    match (key.is_empty(), origin) {
        (false, Some(origin)) => format!("{key}: {message} (from {origin})"),
        (false, None) => format!("{key}: {message}"),
        (true, Some(origin)) => format!("{origin}: {message}"),
        (true, None) => message.to_owned(),
    }
}

/// Loads settings from compiled defaults, the TOML `file_contents` (if any) and the
/// `READSTATE_`-prefixed pairs in `env`, in that order of precedence, then validates them.
pub fn load(
    file_contents: Option<&str>,
    env: &[(String, String)],
) -> Result<Settings, ConfigError> {
    load_layers(file_contents.map(|c| (c, "config file".to_owned())), env)
}

/// Reads the TOML file at `path` (if any) and the process environment, then calls [`load`].
pub fn load_from(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let contents = match path {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
                path: path.to_owned(),
                cause,
            })?,
        ),
        None => None,
    };
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let file = match (contents.as_deref(), path) {
        (Some(contents), Some(path)) => Some((contents, format!("config file {}", path.display()))),
        _ => None,
    };
    load_layers(file, &env)
}

fn load_layers(
    file: Option<(&str, String)>,
    env: &[(String, String)],
) -> Result<Settings, ConfigError> {
    let mut figment = Figment::new();
    if let Some((contents, name)) = file {
        figment = figment.merge(FileLayer::new(name, contents));
    }
    figment = figment.merge(EnvLayer::from_pairs(env)?);
    if figment.find_value("storage.url").is_err()
        && let Some((_, url)) = env
            .iter()
            .find(|(name, url)| name.trim() == DATABASE_URL_ENV && !url.trim().is_empty())
    {
        figment = figment.merge(DatabaseUrlLayer { url: url.clone() });
    }

    let settings: Settings = figment
        .extract_lossy()
        .map_err(|e| from_figment(&figment, e))?;
    settings.validate().map_err(|e| with_origin(&figment, e))?;
    Ok(settings)
}

/// The TOML layer, named after its file so errors say where a bad value came from.
struct FileLayer {
    name: String,
    contents: String,
}

impl FileLayer {
    fn new(name: String, contents: &str) -> Self {
        Self {
            name,
            contents: contents.to_owned(),
        }
    }
}

impl Provider for FileLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Toml::string(&self.contents).data()
    }
}

/// `DATABASE_URL` as `storage.url`, named after its variable so errors say where the
/// value came from.
struct DatabaseUrlLayer {
    url: String,
}

impl Provider for DatabaseUrlLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{ENV_SOURCE_NAME} {DATABASE_URL_ENV}"))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        insert_path(
            &mut dict,
            &["storage", "url"],
            Value::from(self.url.clone()),
        );
        Ok(Profile::Default.collect(dict))
    }
}

/// The environment layer built from explicit pairs instead of the process environment.
struct EnvLayer {
    dict: Dict,
}

impl EnvLayer {
    fn from_pairs(env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut dict = Dict::new();
        for (name, value) in env {
            let name = name.trim();
            let Some(rest) = strip_prefix_ignore_case(name, ENV_PREFIX) else {
                continue;
            };
            if name.eq_ignore_ascii_case(CONFIG_PATH_ENV) || is_service_link(rest) {
                continue;
            }
            let key = rest.to_ascii_lowercase();
            let path: Vec<&str> = key.split(ENV_SPLIT).collect();
            if path.iter().any(|segment| segment.is_empty()) {
                return Err(ConfigError::Invalid {
                    key: String::new(),
                    message: "malformed name: use `__` only between key levels, e.g. READSTATE_HTTP__ADDR".to_owned(),
                    origin: Some(format!("{ENV_SOURCE_NAME} {name}")),
                });
            }
            // Values stay strings (`extract_lossy` turns them into numbers where one is
            // expected), except `[...]`, a list such as `["a.>", "b.>"]`, in JSON
            // (`[{"name": "a", ...}]`) or figment's own syntax (`[{name = "a"}]`).
            let parsed = match value.trim_start().starts_with('[') {
                true => serde_json::from_str::<Value>(value)
                    .ok()
                    .or_else(|| value.parse::<Value>().ok())
                    .filter(|v| v.as_array().is_some()),
                false => None,
            };
            insert_path(
                &mut dict,
                &path,
                parsed.unwrap_or_else(|| Value::from(value.clone())),
            );
        }
        Ok(Self { dict })
    }
}

/// Whether the rest of a `READSTATE_` name is one of the variables Kubernetes puts
/// in every pod for a Service named `readstate` (`READSTATE_SERVICE_HOST`,
/// `READSTATE_SERVICE_PORT[_NAME]`, `READSTATE_PORT[_8080_TCP[_PROTO|_PORT|_ADDR]]`):
/// not settings (which always have a `__`), and not typos to refuse either.
fn is_service_link(rest: &str) -> bool {
    let rest = rest.to_ascii_uppercase();
    !rest.contains(ENV_SPLIT)
        && (rest == "SERVICE_HOST"
            || rest == "SERVICE_PORT"
            || rest.starts_with("SERVICE_PORT_")
            || rest == "PORT"
            || rest.starts_with("PORT_"))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn insert_path(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

fn env_var_name(keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
    format!("{ENV_PREFIX}{}", keys.join(ENV_SPLIT))
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_SOURCE_NAME)
            .interpolater(|_: &Profile, keys: &[&str]| env_var_name(keys))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Converts the first figment error into a [`ConfigError`] that names the key path.
fn from_figment(figment: &Figment, error: figment::Error) -> ConfigError {
    let Some(error) = error.into_iter().next() else {
        return ConfigError::invalid("", "invalid configuration");
    };
    let mut path = error.path.clone();
    let message = match &error.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            if expected.is_empty() {
                "unknown key".to_owned()
            } else {
                format!("unknown key, expected one of: {}", expected.join(", "))
            }
        }
        figment::error::Kind::UnknownVariant(value, expected) => {
            format!(
                "unknown value `{value}`, expected one of: {}",
                expected.join(", ")
            )
        }
        kind => kind.to_string().trim_end().to_owned(),
    };
    let key = path.join(".");
    let origin = origin_of(figment, &key).or_else(|| {
        error.metadata.as_ref().map(|md| {
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            describe_source(md, &keys)
        })
    });
    ConfigError::Invalid {
        key,
        message,
        origin,
    }
}

fn with_origin(figment: &Figment, error: ConfigError) -> ConfigError {
    match error {
        ConfigError::Invalid {
            key,
            message,
            origin: None,
        } => {
            let origin = origin_of(figment, &key);
            ConfigError::Invalid {
                key,
                message,
                origin,
            }
        }
        other => other,
    }
}

fn origin_of(figment: &Figment, key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let md = figment.find_metadata(key)?;
    let keys: Vec<&str> = key.split('.').collect();
    Some(describe_source(md, &keys))
}

fn describe_source(md: &Metadata, keys: &[&str]) -> String {
    if md.name == ENV_SOURCE_NAME {
        format!(
            "{ENV_SOURCE_NAME} {}",
            md.interpolate(&Profile::Default, keys)
        )
    } else {
        md.name.to_string()
    }
}
