//! The JSON bodies of the requests other than inference (the repository
//! extension's index and load, shared memory registration): read within
//! the body limits, their bytes held in the body budget while they are
//! parsed, and parsed into typed requests that keep only the fields they
//! name. Not into a `serde_json::Value`: a value takes many times its text
//! (a body of 64 MiB of `[0,0,…]` would take about 1 GiB), none of which
//! the budget would count.

use axum::extract::Request;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::app::App;
use crate::body::{BodyHead, read_body};
use crate::error::ApiError;

/// The JSON body of a request other than inference (`what` names the
/// request in errors, `expected` says what it should be), read within the
/// body limits and parsed into `T` while its bytes are held in the body
/// budget; an empty body is `T::default()`. `T` is a typed request that
/// keeps only the fields it names (others are skipped, not stored), so
/// what it holds once the body is dropped is what it is meant to.
pub(crate) async fn json_request<T: DeserializeOwned + Default>(
    app: &App,
    request: Request,
    what: &str,
    expected: &str,
) -> Result<T, ApiError> {
    let head = BodyHead::of(request.headers());
    let (body, _lease) = read_body(app, head, request.into_body()).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed {what} request JSON: {e}; expected {expected}")))
}

/// The body of `POST /v2/repository/index`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct IndexRequest {
    /// List only the versions ready to serve.
    #[serde(default)]
    pub ready: bool,
}

/// The body of `POST /v2/repository/models/{name}/load`: of Triton's, only
/// whether its parameters ask for what this server cannot do.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoadRequest {
    /// Its parameters: which override they ask for, if any.
    #[serde(default)]
    pub parameters: Overrides,
}

/// The first of a load's parameters that gives a configuration or a file
/// to load instead of the directory's (Triton's `config`, a JSON string,
/// and `file:<path>`, base64 contents), if any; the parameters themselves
/// are skipped as they are read, not kept. Parameters that are not an
/// object name none.
#[derive(Debug, Default)]
pub(crate) struct Overrides(pub Option<String>);

impl<'de> Deserialize<'de> for Overrides {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Overrides, D::Error> {
        d.deserialize_any(OverridesVisitor)
    }
}

struct OverridesVisitor;

/// Anything but an object names no override.
macro_rules! names_no_override {
    ($($visit:ident($t:ty)),*) => {$(
        fn $visit<E: serde::de::Error>(self, _: $t) -> Result<Overrides, E> {
            Ok(Overrides(None))
        }
    )*};
}

impl<'de> Visitor<'de> for OverridesVisitor {
    type Value = Overrides;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the load's parameters, an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Overrides, A::Error> {
        let mut first = None;
        while let Some(OverrideKey(key)) = map.next_key()? {
            map.next_value::<IgnoredAny>()?;
            first = first.or(key);
        }
        Ok(Overrides(first))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Overrides, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Overrides(None))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Overrides, E> {
        Ok(Overrides(None))
    }

    names_no_override!(visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64), visit_str(&str));
}

/// A parameter's name, kept only if it names an override.
struct OverrideKey(Option<String>);

impl<'de> Deserialize<'de> for OverrideKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OverrideKey, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = OverrideKey;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a parameter's name")
            }

            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<OverrideKey, E> {
                let named = key == "config" || key.starts_with("file:");
                Ok(OverrideKey(named.then(|| key.to_string())))
            }
        }
        d.deserialize_str(Key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<Option<String>, serde_json::Error> {
        serde_json::from_str::<LoadRequest>(json).map(|l| l.parameters.0)
    }

    #[test]
    fn a_load_names_the_first_override_it_asks_for_and_keeps_nothing_else() {
        assert_eq!(
            load(r#"{"parameters": {"config": "{\"max_batch_size\": 8}"}}"#).unwrap().as_deref(),
            Some("config")
        );
        let files =
            r#"{"parameters": {"unload_dependents": [1, {"a": 2}], "file:1/model.onnx": "AAAA", "config": "{}"}}"#;
        assert_eq!(load(files).unwrap().as_deref(), Some("file:1/model.onnx"));
        // Escaped names are read as names.
        assert_eq!(load(r#"{"parameters": {"file\u003a1/m": ""}}"#).unwrap().as_deref(), Some("file:1/m"));
        for fine in [
            "{}",
            r#"{"parameters": {"unload_dependents": true}}"#,
            r#"{"parameters": null}"#,
            r#"{"parameters": [1, 2]}"#,
            r#"{"parameters": "config"}"#,
            r#"{"other": {"config": 1}, "parameters": {}}"#,
        ] {
            assert_eq!(load(fine).unwrap(), None, "{fine}");
        }
        assert!(load(r#"{"parameters": "#).is_err());
        assert!(load(r#"{"parameters": {"config" 1}}"#).is_err());
    }

    #[test]
    fn an_index_reads_ready_and_nothing_else() {
        let ready = |json: &str| serde_json::from_str::<IndexRequest>(json).map(|i| i.ready);
        assert!(!ready("{}").unwrap());
        assert!(ready(r#"{"ready": true, "other": [0, 0, 0]}"#).unwrap());
        let e = ready(r#"{"ready": 1}"#).unwrap_err().to_string();
        assert!(e.contains("expected a boolean"), "{e}");
    }
}
