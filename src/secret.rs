//! A configuration value that must never be shown: tokens, passwords, shared secrets.
//!
//! Settings are printed by `--check-config`, by `{:?}` in logs and error messages, and by
//! anything else that serializes the configuration. Wrapping a secret in [`Secret`] makes
//! every one of those print `<redacted>`, so a new secret key is safe by construction;
//! only [`Secret::expose`] hands out the value, for the code that checks it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What every output shows instead of a secret's value.
pub const REDACTED: &str = "<redacted>";

/// A secret string read from the configuration.
///
/// It serializes as `"<redacted>"` (an empty one as `""`, so that `--check-config` still
/// shows that it is unset). Because defaults are serialized into the configuration's first
/// layer, a secret's default must be empty or `None`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that compares or uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            REDACTED
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?})", self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(\"<redacted>\")");
        assert_eq!(
            serde_json::to_string(&s).expect("serializes"),
            "\"<redacted>\""
        );
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(
            serde_json::to_string(&Secret::default()).expect("serializes"),
            "\"\""
        );
    }
}
