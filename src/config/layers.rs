//! The configuration's layers (defaults, file, environment, `--set` flags) and the error
//! messages that say where a bad value came from.
//!
//! figment stops at the first problem it meets, so a file with three misspelt keys would
//! take three runs to fix. Here each layer is kept as plain data: an unknown key is noted and
//! removed from the layer that holds it, and extraction runs again, so that one run names
//! every unknown key. The TOML file is parsed here too, so that a syntax error is one line
//! with `file:line:column`.

use std::path::Path;

use figment::error::Kind;
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{Config, ConfigError, Source};

/// Most problems reported at once (each costs one more extraction).
const MOST_REPORTED: usize = 64;

/// Every layer, lowest precedence first.
pub(super) struct Layers(Vec<Layer>);

/// One source of values: its name for error messages and its values, nested by key.
#[derive(Clone)]
struct Layer {
    metadata: Metadata,
    root: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<figment::value::Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.root.clone()))
    }
}

impl Layers {
    /// Reads the defaults, the file named by `source`, `GATEWAY_*` variables of `env` and
    /// `--set` `overrides`.
    pub(super) fn read(
        source: Source<'_>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let defaults = Serialized::defaults(Config::default())
            .data()
            .map_err(|e| ConfigError::Parse(format!("built-in defaults: {e}")))?
            .remove(&Profile::Default)
            .unwrap_or_default();
        let mut layers = vec![Layer {
            metadata: Metadata::named("defaults"),
            root: defaults,
        }];
        let file = match source {
            Source::Required(path) if !path.is_file() => {
                return Err(ConfigError::Parse(format!(
                    "config file {}: not found or not a file",
                    path.display()
                )))
            }
            Source::Required(path) => Some(path),
            Source::Optional(path) => path.is_file().then_some(path),
        };
        if let Some(path) = file {
            layers.push(Layer {
                metadata: Metadata::from("file", path),
                root: read_toml(path)?,
            });
        }
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with("GATEWAY_"))
            .collect();
        vars.sort();
        for (name, raw) in vars {
            let rest = name.trim_start_matches("GATEWAY_");
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            layers.push(Layer::single(
                format!("environment variable {name}"),
                &path,
                &raw,
            ));
        }
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| ConfigError::Parse(format!("--set {item}: expected key=value")))?;
            let path: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
            layers.push(Layer::single("--set flag".into(), &path, value));
        }
        Ok(Self(layers))
    }

    fn figment(&self) -> Figment {
        self.0
            .iter()
            .fold(Figment::new(), |f, layer| f.merge(layer.clone()))
    }

    /// The typed configuration, or every unknown key (and at most one other problem),
    /// separated by `; `.
    pub(super) fn extract(&mut self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        while problems.len() < MOST_REPORTED {
            let error = match self.figment().extract::<Config>() {
                Ok(config) if problems.is_empty() => return Ok(config),
                Ok(_) => break,
                Err(e) => e,
            };
            let Some(error) = error.into_iter().next() else {
                break;
            };
            let path = key_path(&error);
            problems.push(describe(&error, &path));
            if !matches!(error.kind, Kind::UnknownField(..)) || !self.remove(&path) {
                break;
            }
        }
        Err(ConfigError::Parse(problems.join("; ")))
    }

    /// Adds to a validation error where the value at fault came from.
    pub(super) fn locate(&self, error: ConfigError) -> ConfigError {
        let ConfigError::Invalid { key, message } = error else {
            return error;
        };
        let figment = self.figment();
        let mut parts: Vec<&str> = key.split('.').collect();
        let mut origin = None;
        while !parts.is_empty() && origin.is_none() {
            origin = figment.find_metadata(&parts.join(".")).map(name_of);
            parts.pop();
        }
        let message = match origin {
            Some(origin) => format!("{message} (from {origin})"),
            None => message,
        };
        ConfigError::Invalid { key, message }
    }

    /// Removes `path` from every layer; whether any held it.
    fn remove(&mut self, path: &[String]) -> bool {
        let mut removed = false;
        for layer in &mut self.0 {
            removed |= remove_path(&mut layer.root, path);
        }
        removed
    }
}

impl Layer {
    /// A layer holding one value given as a string (an environment variable or a `--set`
    /// flag): a TOML value if it reads as one (`5`, `true`, `"quoted"`, `{ cert = "…" }`),
    /// else the string itself (`off`, `127.0.0.1:8443`, `15 seconds`).
    fn single(name: String, path: &[String], raw: &str) -> Self {
        let mut root = Dict::new();
        insert_path(&mut root, path, typed(raw));
        Self {
            metadata: Metadata::named(name),
            root,
        }
    }
}

/// `raw` as a TOML value, or as a string when it is not one.
fn typed(raw: &str) -> Value {
    #[derive(serde::Deserialize)]
    struct One {
        v: Value,
    }
    if raw.contains(['\n', '\r']) {
        return Value::from(raw.to_owned());
    }
    toml::from_str::<One>(&format!("v = {raw}"))
        .map(|one| one.v)
        .unwrap_or_else(|_| Value::from(raw.to_owned()))
}

/// Parses a TOML file; a syntax error is one line, `path:line:column: message`.
fn read_toml(path: &Path) -> Result<Dict, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Parse(format!("config file {}: {e}", path.display())))?;
    toml::from_str::<Dict>(&text).map_err(|e| {
        let (line, column) = e
            .span()
            .map_or((1, 1), |span| line_and_column(&text, span.start));
        let message = e.message().trim().replace('\n', " ");
        ConfigError::Parse(format!(
            "{}:{line}:{column}: TOML syntax error: {message}",
            path.display()
        ))
    })
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The dotted key of an error, without figment's profile name.
fn key_path(e: &figment::Error) -> Vec<String> {
    e.path
        .iter()
        .skip_while(|p| *p == "default")
        .cloned()
        .collect()
}

/// "webrtcroom.listen: invalid socket address syntax (from environment variable …)".
fn describe(e: &figment::Error, path: &[String]) -> String {
    let key = if path.is_empty() {
        "config".to_owned()
    } else {
        path.join(".")
    };
    let origin = e.metadata.as_ref().map_or("defaults".into(), name_of);
    match &e.kind {
        Kind::UnknownField(_, expected) => format!(
            "{key}: unknown key (from {origin}); this table takes {}",
            expected.join(", ")
        ),
        kind => format!("{key}: {kind} (from {origin})"),
    }
}

/// A layer's name as errors show it: the file's path, or the layer's name.
fn name_of(m: &Metadata) -> String {
    match &m.source {
        Some(figment::Source::File(path)) => path.display().to_string(),
        _ => m.name.to_string(),
    }
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Dict::new().into());
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = Dict::new();
                insert_path(&mut inner, rest, value);
                *entry = inner.into();
            }
        }
    }
}

/// Removes the value at `path`; whether there was one.
fn remove_path(dict: &mut Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => dict.remove(last).is_some(),
        [first, rest @ ..] => match dict.get_mut(first) {
            Some(Value::Dict(_, inner)) => remove_path(inner, rest),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_are_toml_values_or_strings() {
        assert!(matches!(typed("5"), Value::Num(..)));
        assert!(matches!(typed("false"), Value::Bool(..)));
        assert!(matches!(
            typed("{ cert = \"a\", key = \"b\" }"),
            Value::Dict(..)
        ));
        for text in ["off", "127.0.0.1:8443", "15 seconds", "/chat", "1\nx = 2"] {
            assert_eq!(typed(text).into_string().as_deref(), Some(text), "{text}");
        }
        assert_eq!(typed("\"quoted\"").into_string().as_deref(), Some("quoted"));
    }

    #[test]
    fn positions_count_lines_and_characters() {
        assert_eq!(line_and_column("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_and_column("x", 0), (1, 1));
    }
}
