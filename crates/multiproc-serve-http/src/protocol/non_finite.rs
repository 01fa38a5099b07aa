//! Non-finite floats in request JSON. JSON has no NaN or infinities, but
//! tritonclient writes its requests with python-rapidjson, which spells them
//! `NaN`, `Infinity` and `-Infinity` (and Triton reads them, rapidjson's
//! `kParseNanAndInfFlag`). A request that fails to parse is given a second
//! chance with those tokens turned into the strings `"NaN"`, … which a
//! floating-point input's elements accept: requests without them never pay
//! for it.
//!
//! ```
//! use multiproc_serve_http::protocol::non_finite::{as_strings, parse};
//! let text = br#"{"data": [NaN, -Infinity, 1], "s": "NaN Infinity"}"#;
//! assert_eq!(as_strings(text).unwrap(), br#"{"data": ["NaN", "-Infinity", 1], "s": "NaN Infinity"}"#);
//! assert_eq!(as_strings(br#"{"data": [1]}"#), None);
//! assert!(parse("NaN").unwrap().is_nan() && parse("-Infinity") == Some(f64::NEG_INFINITY));
//! assert_eq!(parse("nan"), None);
//! ```

/// The tokens, longest first where one begins another.
const TOKENS: [&[u8]; 5] = [b"-Infinity", b"Infinity", b"-Inf", b"Inf", b"NaN"];

/// `json` with every `NaN`, `Infinity`, `-Infinity` (and rapidjson's `Inf`,
/// `-Inf`) outside a string turned into a string of itself; `None` if there
/// is none.
pub fn as_strings(json: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let (mut i, mut copied, mut in_string) = (0, 0, false);
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
                let out = out.get_or_insert_with(|| Vec::with_capacity(json.len() + 16));
                out.extend_from_slice(&json[copied..i]);
                out.push(b'"');
                out.extend_from_slice(token);
                out.push(b'"');
                i += token.len();
                copied = i;
            }
            None => i += 1,
        }
    }
    let mut out = out?;
    out.extend_from_slice(&json[copied..]);
    Some(out)
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
