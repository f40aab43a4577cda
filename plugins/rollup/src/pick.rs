//! The few fields a record is counted by, read from its JSON without building the rest of it
//! (a session has a dozen fields; the rollup needs three, and most time went to allocating the
//! others).

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// A picked field: text borrowed from the record where it has no escapes, anything else as a
/// value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Text(Cow<'a, str>),
    Other(Value),
}

impl Field<'_> {
    pub fn to_value(&self) -> Value {
        match self {
            Field::Text(t) => Value::String(t.clone().into_owned()),
            Field::Other(v) => v.clone(),
        }
    }
}

/// The values of `names` in the JSON object `json`, in the order of `names` (`None`: absent).
pub fn fields<'a>(json: &'a [u8], names: &[String]) -> serde_json::Result<Vec<Option<Field<'a>>>> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let picked = Pick { names }.deserialize(&mut de)?;
    de.end()?;
    Ok(picked)
}

struct Pick<'n> {
    names: &'n [String],
}

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = Vec<Option<Field<'de>>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = Vec<Option<Field<'de>>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: Vec<Option<Field<'de>>> = self.names.iter().map(|_| None).collect();
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            if self.names.iter().any(|n| *n == key) {
                let value: Field<'de> = map.next_value()?;
                for (i, _) in self.names.iter().enumerate().filter(|(_, n)| **n == key) {
                    found[i] = Some(value.clone());
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A key, borrowed where it can be.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FieldVisitor).and_then(|f| match f {
            Field::Text(t) => Ok(Text(t)),
            Field::Other(_) => Err(serde::de::Error::custom("a key that is not text")),
        })
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Field::Text(Cow::Owned(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Field::Other(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Field::Other(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Field::Other(v.into()))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Field::Other(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::Null))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Field::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Field::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn picks_the_named_fields_and_passes_over_the_rest() {
        let json =
            br#"{"a":{"deep":[1,2]},"country":"Greece","n":5,"x":null,"esc":"a\"b","status":true}"#;
        let wanted = names(&["status", "country", "missing", "n", "esc", "x", "a", "n"]);
        let got = fields(json, &wanted).unwrap();
        assert_eq!(
            got,
            [
                Some(Field::Other(Value::Bool(true))),
                Some(Field::Text(Cow::Borrowed("Greece"))),
                None,
                Some(Field::Other(5.into())),
                Some(Field::Text(Cow::Owned("a\"b".into()))),
                Some(Field::Other(Value::Null)),
                Some(Field::Other(serde_json::json!({"deep": [1, 2]}))),
                Some(Field::Other(5.into())),
            ]
        );
    }

    #[test]
    fn what_is_not_one_json_object_is_an_error() {
        for bad in [&b"[1]"[..], b"{\"a\":1} x", b"{\"a\":", b"nope"] {
            assert!(
                fields(bad, &names(&["a"])).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
