//! Shapes shared by every `--json` report (docs/json.md), so the names stay one scheme.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// A list of failures as two fields: `failed`, how many, and `failures`, each with why.
/// Used flattened (`#[serde(flatten, serialize_with = ...)]`): a reader that only
/// counts does not have to walk the list.
pub(crate) fn count_and_list<S: Serializer, T: Serialize>(
    list: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(2))?;
    m.serialize_entry("failed", &list.len())?;
    m.serialize_entry("failures", list)?;
    m.end()
}
