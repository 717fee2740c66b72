//! Decoding a Socket.IO event array (`["name", payload, ...]`) without copying the payload.
//!
//! Adapters forward most payloads unchanged, so the payload stays a borrowed [`RawValue`]:
//! the client's bytes go back out as they came, with field order, extra fields and number
//! formatting intact.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// One received event.
#[derive(Debug)]
pub struct EventFrame<'a> {
    /// The event name.
    pub name: Cow<'a, str>,
    /// The first argument, if any.
    pub payload: Option<&'a RawValue>,
    /// How many arguments followed the first (no protocol here uses them).
    pub extra_args: usize,
}

impl<'a> EventFrame<'a> {
    /// Decodes the JSON text of an event packet.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The payload when it is a JSON object (`{...}`), else `None`.
    pub fn object(&self) -> Option<&'a RawValue> {
        self.payload
            .filter(|p| p.get().trim_start().starts_with('{'))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for EventFrame<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FrameVisitor;
        impl<'de> Visitor<'de> for FrameVisitor {
            type Value = EventFrame<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event array [\"name\", ...args]")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let name: Cow<'de, str> = seq
                    .next_element::<CowStr<'de>>()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?
                    .0;
                let payload = seq.next_element::<&'de RawValue>()?;
                let mut extra_args = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    extra_args += 1;
                }
                Ok(EventFrame {
                    name,
                    payload,
                    extra_args,
                })
            }
        }
        d.deserialize_seq(FrameVisitor)
    }
}

/// A string that borrows from the input when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Deserializes a field that must be a string, borrowing when possible.
pub fn cow_str<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    CowStr::deserialize(d).map(|c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_payload_bytes() {
        let f = EventFrame::parse(r#"["offer",{"b":1,"a":"\/x"}]"#).expect("parses");
        assert_eq!(f.name, "offer");
        assert_eq!(f.payload.map(|p| p.get()), Some(r#"{"b":1,"a":"\/x"}"#));
        assert!(f.object().is_some());
        assert_eq!(f.extra_args, 0);
    }

    #[test]
    fn missing_and_extra_arguments() {
        let f = EventFrame::parse(r#"["exit"]"#).expect("parses");
        assert!(f.payload.is_none());
        let f = EventFrame::parse(r#"["exit",null,2,3]"#).expect("parses");
        assert_eq!(f.payload.map(|p| p.get()), Some("null"));
        assert!(f.object().is_none());
        assert_eq!(f.extra_args, 2);
    }

    #[test]
    fn escaped_names_decode() {
        let f = EventFrame::parse(r#"["\u0065xit",{}]"#).expect("parses");
        assert_eq!(f.name, "exit");
    }

    #[test]
    fn rejects_non_arrays() {
        for bad in ["{}", "[]", "[1]", "\"x\"", "[\"a\""] {
            assert!(EventFrame::parse(bad).is_err(), "{bad}");
        }
    }
}
