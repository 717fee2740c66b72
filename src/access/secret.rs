//! A configuration value that must never be printed: it reads like a string from the file,
//! the environment or a flag, but shows as `<redacted>` in `Debug`, logs and
//! `--check-config`.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// A secret string (token, signing key, TURN shared secret).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that uses it (a comparison or a key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::from("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let json = serde_json::to_string(&s).expect("serializes");
        assert!(!json.contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
