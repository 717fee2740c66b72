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

/// One received event: its name, and its arguments still undecoded.
///
/// Only the name is decoded up front. The payload is decoded once, by the adapter, either as
/// a typed struct or as raw text to forward: each extra pass over a payload (an SDP is
/// several KiB of string) is a measurable share of a relay's cost.
#[derive(Debug)]
pub struct EventFrame<'a> {
    /// The event name.
    pub name: Cow<'a, str>,
    /// The arguments' text, from the first one to the closing `]`; `None` without any.
    args: Option<&'a str>,
}

impl<'a> EventFrame<'a> {
    /// Decodes the name of the event in `text`, the JSON array of an event packet.
    ///
    /// socketioxide has already read the whole array as JSON before an adapter sees it, so
    /// only the name's position is found here; a name with escapes goes through serde.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        let fast = (|| {
            // Anything after the closing bracket makes the packet malformed: serde says so.
            let rest = text
                .trim()
                .strip_prefix('[')?
                .strip_suffix(']')?
                .trim_start();
            let body = rest.strip_prefix('"')?;
            let close = body.find(['"', '\\'])?;
            if body.as_bytes()[close] != b'"' {
                return None;
            }
            let after = body[close + 1..].trim_start();
            let args = match after.as_bytes().first() {
                Some(b',') => Some(after[1..].trim_start()),
                None => None,
                _ => return None,
            };
            Some(EventFrame {
                name: Cow::Borrowed(&body[..close]),
                args,
            })
        })();
        match fast {
            Some(frame) => Ok(frame),
            None => serde_json::from_str(text),
        }
    }

    /// The first argument as raw JSON, exactly as the client wrote it.
    pub fn payload(&self) -> Option<&'a RawValue> {
        let mut de = serde_json::Deserializer::from_str(self.args?);
        <&RawValue>::deserialize(&mut de).ok()
    }

    /// The first argument when it is a JSON object, as raw JSON.
    pub fn object(&self) -> Option<&'a RawValue> {
        self.starts_with(b'{').then(|| self.payload()).flatten()
    }

    /// Whether there is a first argument at all.
    pub fn has_payload(&self) -> bool {
        self.args.is_some()
    }

    /// Whether the first argument is a JSON object (`{`) or array (`[`).
    pub fn starts_with(&self, byte: u8) -> bool {
        self.args
            .and_then(|a| a.as_bytes().first())
            .is_some_and(|b| *b == byte)
    }

    /// The first argument decoded as `T`, in one pass; `None` without any argument.
    pub fn decode<T: Deserialize<'a>>(&self) -> Option<Result<T, serde_json::Error>> {
        let mut de = serde_json::Deserializer::from_str(self.args?);
        Some(T::deserialize(&mut de))
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
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(EventFrame {
                    name,
                    args: payload.map(RawValue::get),
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

/// Finds the top-level string members named by `keys` (each given with its quotes, e.g.
/// `"\"to\""`) in the text of a JSON object, without decoding the rest of it, and stops as
/// soon as all are found.
///
/// Signalling clients put the routing fields first and the SDP after them, so this usually
/// reads a few dozen bytes of a multi-KiB message. `None` means "not decidable here" (an
/// escape in a key or a wanted value, a wanted key twice or with a non-string value, or text
/// after the stop that could hold another occurrence): the caller then decodes with serde,
/// which also rejects duplicate keys, so a receiver can never see a different value than
/// the one checked.
pub fn top_level_strs<'a, const N: usize>(
    object: &'a str,
    keys: [&str; N],
) -> Option<[Option<&'a str>; N]> {
    let b = object.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut found: [Option<&'a str>; N] = [None; N];
    let mut count = 0;
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b'}' => return Some(found),
            b'"' => {}
            _ => return None,
        }
        let key_end = plain_string_end(object, i)?;
        let key = &object[i..=key_end];
        i = skip_ws(b, key_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        if let Some(k) = keys.iter().position(|wanted| *wanted == key) {
            if found[k].is_some() || b.get(i) != Some(&b'"') {
                return None;
            }
            let end = plain_string_end(object, i)?;
            found[k] = Some(&object[i + 1..end]);
            i = end + 1;
            count += 1;
            if count == N {
                let rest = &object[i..];
                if keys.iter().any(|k| rest.contains(k)) || rest.contains("\\u") {
                    return None;
                }
                return Some(found);
            }
        } else {
            i = skip_value(b, i)?;
        }
        i = skip_ws(b, i);
        match b.get(i)? {
            b',' => i += 1,
            b'}' => return Some(found),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index of the closing quote of the string opening at `start`, if it has no escapes.
fn plain_string_end(s: &str, start: usize) -> Option<usize> {
    let rel = s.get(start + 1..)?.find(['"', '\\'])?;
    let end = start + 1 + rel;
    (s.as_bytes()[end] == b'"').then_some(end)
}

/// The index just past the JSON value starting at `i` (the text is known to be valid JSON).
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *b.get(i)? {
            b'"' => {
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
                i += 1;
            }
            b',' if depth == 0 => return Some(i),
            _ => i += 1,
        }
        if depth == 0 && matches!(b.get(i), Some(b',' | b'}' | b']') | None) {
            return Some(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_payload_bytes() {
        let f = EventFrame::parse(r#"["offer",{"b":1,"a":"\/x"}]"#).expect("parses");
        assert_eq!(f.name, "offer");
        assert_eq!(f.payload().map(|p| p.get()), Some(r#"{"b":1,"a":"\/x"}"#));
        assert!(f.object().is_some());
    }

    #[test]
    fn missing_and_extra_arguments() {
        let f = EventFrame::parse(r#"["exit"]"#).expect("parses");
        assert!(f.payload().is_none() && !f.has_payload());
        let f = EventFrame::parse(r#"[ "exit" , null, 2, 3 ]"#).expect("parses");
        assert_eq!(f.payload().map(|p| p.get()), Some("null"));
        assert!(f.object().is_none());
        let f = EventFrame::parse(r#"["leave",[{"a":1}],"x"]"#).expect("parses");
        assert!(f.starts_with(b'['));
        let list: Vec<serde_json::Value> = f.decode().expect("has one").expect("decodes");
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn escaped_names_decode() {
        let f = EventFrame::parse(r#"["\u0065xit",{}]"#).expect("parses");
        assert_eq!(f.name, "exit");
        assert!(f.object().is_some());
        let f = EventFrame::parse(r#"["a\"b"]"#).expect("parses");
        assert_eq!(f.name, "a\"b");
    }

    #[test]
    fn typed_decoding_reads_the_first_argument_only() {
        #[derive(Deserialize)]
        struct Room<'a> {
            room: &'a str,
        }
        let f = EventFrame::parse(r#"["createAndJoinRoom",{"room":"r1"},{"room":"r2"}]"#)
            .expect("parses");
        let room: Room = f.decode().expect("has one").expect("decodes");
        assert_eq!(room.room, "r1");
    }

    const KEYS: [&str; 2] = ["\"from\"", "\"to\""];

    #[test]
    fn finds_routing_fields_and_stops() {
        let msg = r#"{"from":"A","to":"B","room":"r","sdp":"v=0\r\n"}"#;
        assert_eq!(top_level_strs(msg, KEYS), Some([Some("A"), Some("B")]));
        let later = r#"{ "room" : {"from":"X","to":["Y"]}, "n": -1.5e3, "ok": true, "to" : "B", "from":"A" }"#;
        assert_eq!(top_level_strs(later, KEYS), Some([Some("A"), Some("B")]));
        let missing = r#"{"from":"A","sdp":"x"}"#;
        assert_eq!(top_level_strs(missing, KEYS), Some([Some("A"), None]));
        assert_eq!(top_level_strs("{}", KEYS), Some([None, None]));
    }

    #[test]
    fn leaves_undecidable_objects_to_serde() {
        for msg in [
            r#"{"from":"A","to":"B","from":"C"}"#,      // a later duplicate
            r#"{"from":"A","from":"C","to":"B"}"#,      // a duplicate before the stop
            r#"{"from":"A","to":"B","x":"\u0066rom"}"#, // an escape that could spell a key
            r#"{"fr\u006fm":"C","from":"A","to":"B"}"#, // an escaped key
            r#"{"from":"A\"","to":"B"}"#,               // an escaped value
            r#"{"from":1,"to":"B"}"#,                   // not a string
            r#"[1]"#,
        ] {
            assert_eq!(top_level_strs(msg, KEYS), None, "{msg}");
        }
    }

    #[test]
    fn rejects_non_arrays() {
        for bad in ["{}", "[]", "[1]", "\"x\"", r#"["join",{}]xyz"#] {
            assert!(EventFrame::parse(bad).is_err(), "{bad}");
        }
    }
}
