//! `Option<Option<T>>` for JSON merge-patch fields: absent (`None`), `null` (`Some(None)`) and a
//! value (`Some(Some(v))`) are three different requests and three different events.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub fn serialize<T: Serialize, S: Serializer>(
    value: &Option<Option<T>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(inner) => inner.serialize(serializer),
        // Fields using this module skip `None` with `skip_serializing_if = "Option::is_none"`.
        None => serializer.serialize_none(),
    }
}

pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}
