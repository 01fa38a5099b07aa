//! The model name a request carries: kept inline when short (by
//! `compact_str`), so that a request costs no allocation for it (a model's
//! name is usually a word, and a request is sent a million times a second).

use std::fmt;
use std::time::Duration;

use compact_str::CompactString;

use crate::error::ServeError;

/// A model's (or pipeline's) name as a [`Request`](crate::Request) holds
/// it: made from whatever makes a `String` (`&str`, `&String`, `String`,
/// `Box<str>`, `Cow<str>`); a name of up to 24 bytes is kept inline
/// instead of allocated.
///
/// ```
/// use multiproc_serve::ModelName;
///
/// let short = ModelName::from("classifier");
/// let long = ModelName::from("a-model-name-longer-than-thirty-bytes".to_string());
/// assert_eq!(short, "classifier");
/// assert_eq!(&*long, "a-model-name-longer-than-thirty-bytes");
/// assert_eq!(String::from(short), "classifier");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ModelName(CompactString);

impl ModelName {
    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl From<&str> for ModelName {
    fn from(name: &str) -> Self {
        ModelName(CompactString::from(name))
    }
}

impl From<&String> for ModelName {
    fn from(name: &String) -> Self {
        ModelName::from(name.as_str())
    }
}

impl From<String> for ModelName {
    fn from(name: String) -> Self {
        ModelName(CompactString::from(name))
    }
}

impl From<&mut str> for ModelName {
    fn from(name: &mut str) -> Self {
        ModelName::from(&*name)
    }
}

impl From<Box<str>> for ModelName {
    fn from(name: Box<str>) -> Self {
        ModelName(CompactString::from(name))
    }
}

impl From<std::borrow::Cow<'_, str>> for ModelName {
    fn from(name: std::borrow::Cow<'_, str>) -> Self {
        ModelName(CompactString::from(name))
    }
}

impl From<ModelName> for String {
    fn from(name: ModelName) -> Self {
        name.0.into_string()
    }
}

impl PartialEq<str> for ModelName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ModelName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::ops::Deref for ModelName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// What a request was sent to, for the errors that name it after it left
/// the submitting call (its deadline): a model, or a pipeline, named as a
/// pipeline and not as if it were a model.
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    name: ModelName,
    pipeline: bool,
}

impl Target {
    /// A model named `name`.
    pub(crate) fn model(name: ModelName) -> Target {
        Target { name, pipeline: false }
    }

    /// A pipeline named `name`.
    pub(crate) fn pipeline(name: ModelName) -> Target {
        Target { name, pipeline: true }
    }

    /// The error of a request to this target whose deadline passed after
    /// `waited`, at `stage` (see [`ServeError::DeadlineExceeded`]).
    pub(crate) fn deadline_exceeded(self, waited: Duration, stage: &'static str) -> ServeError {
        let name = String::from(self.name);
        if self.pipeline {
            ServeError::PipelineDeadlineExceeded { pipeline: name, waited, stage }
        } else {
            ServeError::DeadlineExceeded { model: name, waited, stage }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_every_length_read_back_as_given() {
        for len in [0, 1, 23, 24, 25, 100] {
            let name: String = "é".repeat(len / 2) + &"x".repeat(len % 2);
            assert_eq!(ModelName::from(name.as_str()).as_str(), name);
            assert_eq!(ModelName::from(name.clone()).as_str(), name);
            assert_eq!(String::from(ModelName::from(&name)), name);
            assert_eq!(ModelName::from(std::borrow::Cow::Borrowed(name.as_str())).as_str(), name);
            assert_eq!(ModelName::from(name.clone().into_boxed_str()).as_str(), name);
        }
        assert_eq!(format!("{:?} {}", ModelName::from("m"), ModelName::from("m")), "\"m\" m");
    }

    #[test]
    fn a_deadline_names_a_pipeline_as_a_pipeline() {
        let waited = Duration::from_millis(5);
        let e = Target::pipeline("p".into()).deadline_exceeded(waited, "waiting");
        assert_eq!(e.to_string(), "pipeline 'p': the request's deadline passed after 5ms (waiting)");
        let e = Target::model("m".into()).deadline_exceeded(waited, "queued");
        assert_eq!(e.to_string(), "model 'm': the request's deadline passed after 5ms (queued)");
    }
}
