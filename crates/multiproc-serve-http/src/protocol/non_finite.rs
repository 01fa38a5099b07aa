//! Non-finite floats in request JSON. JSON has no NaN or infinities, but
//! tritonclient writes its requests with python-rapidjson, which spells them
//! `NaN`, `Infinity` and `-Infinity` (and Triton reads them, rapidjson's
//! `kParseNanAndInfFlag`). A request that fails to parse is given a second
//! chance with those tokens turned into the strings `"NaN"`, … which a
//! floating-point input's elements accept: requests without them never pay
//! for it.
//!
//! ```
//! use multiproc_serve_http::protocol::non_finite::{as_strings, parse, rewritten_len};
//! let text = br#"{"data": [NaN, -Infinity, 1], "s": "NaN Infinity"}"#;
//! assert_eq!(as_strings(text).unwrap(), br#"{"data": ["NaN", "-Infinity", 1], "s": "NaN Infinity"}"#);
//! assert_eq!(rewritten_len(text), Some(text.len() + 4));
//! assert_eq!(as_strings(br#"{"data": [1]}"#), None);
//! assert!(parse("NaN").unwrap().is_nan() && parse("-Infinity") == Some(f64::NEG_INFINITY));
//! assert_eq!(parse("nan"), None);
//! ```

/// The tokens, longest first where one begins another.
const TOKENS: [&[u8]; 5] = [b"-Infinity", b"Infinity", b"-Inf", b"Inf", b"NaN"];

/// `json` with every `NaN`, `Infinity`, `-Infinity` (and rapidjson's `Inf`,
/// `-Inf`) outside a string turned into a string of itself, in a buffer
/// of exactly its length ([`rewritten_len`]); `None` if there is none.
pub fn as_strings(json: &[u8]) -> Option<Vec<u8>> {
    rewritten_len(json).map(|len| rewrite(json, len))
}

/// [`as_strings`]`(json)` for a `json` whose [`rewritten_len`] is `len`
/// (known already: the tokens are not counted again).
pub(crate) fn rewrite(json: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut copied = 0;
    tokens(json, |i, token| {
        out.extend_from_slice(&json[copied..i]);
        out.push(b'"');
        out.extend_from_slice(token);
        out.push(b'"');
        copied = i + token.len();
    });
    out.extend_from_slice(&json[copied..]);
    out
}

/// The length of [`as_strings`]`(json)` (two quotes more for each token),
/// without making it; `None` if there is no token.
pub fn rewritten_len(json: &[u8]) -> Option<usize> {
    let mut count = 0usize;
    tokens(json, |_, _| count += 1);
    (count > 0).then(|| json.len().saturating_add(count.saturating_mul(2)))
}

/// Calls `found` with the place and the text of every token outside a
/// string, in order.
fn tokens(json: &[u8], mut found: impl FnMut(usize, &'static [u8])) {
    let (mut i, mut in_string) = (0, false);
    while i < json.len() {
        let c = json[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        match TOKENS.iter().find(|t| json[i..].starts_with(t)) {
            Some(token) => {
                found(i, token);
                i += token.len();
            }
            None => i += 1,
        }
    }
}

/// The value of a non-finite token, as [`as_strings`] leaves it in a string.
pub fn parse(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" | "Inf" => Some(f64::INFINITY),
        "-Infinity" | "-Inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}
