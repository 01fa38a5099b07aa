//! The model name a request carries: kept inline when short, so that a
//! request costs no allocation for it (a model's name is usually a word,
//! and a request is sent a million times a second).

use std::fmt;

/// The longest name kept inline.
const INLINE: usize = 30;

/// A model's (or pipeline's) name as a [`Request`](crate::Request) holds
/// it: made from whatever makes a `String` (`&str`, `&String`, `String`,
/// `Box<str>`, `Cow<str>`); a short name is kept inline instead of
/// allocated.
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
#[derive(Clone, PartialEq, Eq)]
pub struct ModelName(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(String),
}

impl ModelName {
    /// The name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Copied from a `str` whole (see `From<&str>`): valid UTF-8.
            Repr::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default(),
            Repr::Heap(s) => s,
        }
    }
}

impl Default for ModelName {
    fn default() -> Self {
        ModelName::from("")
    }
}

impl From<&str> for ModelName {
    fn from(name: &str) -> Self {
        if name.len() > INLINE {
            return ModelName(Repr::Heap(name.to_string()));
        }
        let mut bytes = [0u8; INLINE];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        // At most INLINE (30) bytes: fits a u8.
        ModelName(Repr::Inline { len: name.len() as u8, bytes })
    }
}

impl From<&String> for ModelName {
    fn from(name: &String) -> Self {
        ModelName::from(name.as_str())
    }
}

impl From<String> for ModelName {
    fn from(name: String) -> Self {
        if name.len() > INLINE { ModelName(Repr::Heap(name)) } else { ModelName::from(name.as_str()) }
    }
}

impl From<&mut str> for ModelName {
    fn from(name: &mut str) -> Self {
        ModelName::from(&*name)
    }
}

impl From<Box<str>> for ModelName {
    fn from(name: Box<str>) -> Self {
        ModelName::from(String::from(name))
    }
}

impl From<std::borrow::Cow<'_, str>> for ModelName {
    fn from(name: std::borrow::Cow<'_, str>) -> Self {
        match name {
            std::borrow::Cow::Borrowed(s) => ModelName::from(s),
            std::borrow::Cow::Owned(s) => ModelName::from(s),
        }
    }
}

impl From<ModelName> for String {
    fn from(name: ModelName) -> Self {
        match name.0 {
            Repr::Heap(s) => s,
            Repr::Inline { .. } => name.as_str().to_string(),
        }
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
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 100] {
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
