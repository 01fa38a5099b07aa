//! The model name a request carries: kept inline when short (by
//! `compact_str`), so that a request costs no allocation for it (a model's
//! name is usually a word, and a request is sent a million times a second).

use std::fmt;

use compact_str::CompactString;

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
}
