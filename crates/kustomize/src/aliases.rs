//! A bound on how far YAML aliases may expand a text ("billion laughs").
//!
//! `serde_yaml_ng` expands every alias by replaying the events of its
//! anchored node, and bounds only the *number* of replays (100 per event of
//! the document), not their size: `a: &a [0, 0, …]` followed by
//! `b: [*a, *a, …]` grows with the square of the text, so 20 KiB already
//! deserialize to 16 million values (gigabytes, and seconds of CPU), and an
//! artifact's 16 MiB file to far more than any machine holds.
//!
//! [`check_aliases`] walks a stream the way a deserialization would, counting
//! nodes without building anything, and refuses one that expands beyond what
//! its text could hold without aliases plus [`ALIAS_NODES`].

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The nodes aliases may add to a stream beyond its own size.
pub const ALIAS_NODES: u64 = 1_000_000;

/// Refuses a YAML stream (all its documents together) that deserializes to
/// more than `ALIAS_NODES + 2 × its length in bytes` nodes. Without aliases
/// every node takes at least a byte or two of text, so only alias expansion
/// can reach that; a stream without both `&` and `*` has no alias and is not
/// walked at all. Anything else wrong with the text (syntax, nesting) is left
/// for the real parse to report: this only answers "too large".
pub fn check_aliases(yaml: &[u8]) -> Result<(), String> {
    if !(yaml.contains(&b'&') && yaml.contains(&b'*')) {
        return Ok(());
    }
    let budget = ALIAS_NODES.saturating_add(2 * yaml.len() as u64);
    let counter = Counter {
        left: Cell::new(budget),
        exceeded: Cell::new(false),
    };
    for document in serde_yaml_ng::Deserializer::from_slice(yaml) {
        if Count(&counter).deserialize(document).is_err() {
            if counter.exceeded.get() {
                return Err(format!(
                    "YAML aliases expand the text to more than {budget} nodes (an alias bomb?)"
                ));
            }
            return Ok(());
        }
    }
    Ok(())
}

struct Counter {
    left: Cell<u64>,
    exceeded: Cell<bool>,
}

/// Counts one node and everything under it.
#[derive(Clone, Copy)]
struct Count<'a>(&'a Counter);

impl Count<'_> {
    fn take<E: de::Error>(self) -> Result<(), E> {
        match self.0.left.get().checked_sub(1) {
            Some(left) => {
                self.0.left.set(left);
                Ok(())
            }
            None => {
                self.0.exceeded.set(true);
                Err(E::custom("too many nodes"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Count<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.take()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.take()
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.take()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.take()
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.take()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.take()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.take()
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.take()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.take()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.take()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    /// A tagged node (`!Tag value`).
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use de::VariantAccess as _;
        let (IgnoredAny, variant) = data.variant()?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_and_small_aliases_pass() {
        assert_eq!(check_aliases(b"a: 1\nb: [1, 2]\n"), Ok(()));
        assert_eq!(check_aliases(b"a: &x [1, 2]\nb: [*x, *x]\n"), Ok(()));
        assert_eq!(check_aliases(b"not: [valid"), Ok(()), "left to the parser");
    }

    #[test]
    fn quadratic_expansion_is_refused() {
        let mut yaml = String::from("a: &a [");
        yaml.push_str(&["0"; 2000].join(","));
        yaml.push_str("]\nb: [");
        yaml.push_str(&["*a"; 2000].join(","));
        yaml.push_str("]\n");
        let err = check_aliases(yaml.as_bytes()).unwrap_err();
        assert!(err.contains("alias bomb"), "{err}");
    }
}
