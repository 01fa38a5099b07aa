//! The demo repository built into the binary, so `multiproc serve` works on
//! a fresh machine: `digits`, an MLP (64 → 1024 → 1024 → 10) trained on
//! scikit-learn's 8×8 digits (test accuracy 0.9833 on 360 held-out images,
//! see `demo/train_digits.py`), run by tract; and `text`, a Python
//! standard-library script served through the external-command protocol.

use std::path::{Path, PathBuf};

const FILES: &[(&str, &[u8])] = &[
    ("digits/config.toml", include_bytes!("../demo/repository/digits/config.toml")),
    ("digits/1/model.onnx", include_bytes!("../demo/repository/digits/1/model.onnx")),
    ("text/config.toml", include_bytes!("../demo/repository/text/config.toml")),
    ("text/1/model.py", include_bytes!("../demo/repository/text/1/model.py")),
    ("text/1/multiproc_worker.py", include_bytes!("../../multiproc-serve/python/multiproc_worker.py")),
];

/// The held-out test set of the digits model (JSON: `inputs`, `labels`,
/// `accuracy`).
pub const DIGITS_TEST_SET: &str = include_str!("../demo/digits_test.json");

/// The demo repository unpacked in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct DemoRepository {
    dir: PathBuf,
}

impl DemoRepository {
    /// Unpacks the demo repository under the system's temporary directory.
    ///
    /// ```
    /// let demo = multiproc_serve_http::demo::DemoRepository::unpack().unwrap();
    /// assert!(demo.path().join("digits/1/model.onnx").is_file());
    /// let path = demo.path().to_path_buf();
    /// drop(demo);
    /// assert!(!path.exists());
    /// ```
    ///
    /// # Errors
    ///
    /// The temporary directory cannot be written.
    pub fn unpack() -> std::io::Result<DemoRepository> {
        let nonce: u64 =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let dir = std::env::temp_dir().join(format!("multiproc-demo-{}-{nonce:x}", std::process::id()));
        let demo = DemoRepository { dir };
        for (name, bytes) in FILES {
            let path = demo.dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, bytes)?;
        }
        Ok(demo)
    }

    /// Where it was unpacked.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for DemoRepository {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
