//! Seed 001 (`python多进程`): the Pool API, and thumbnails of a folder of
//! images with `Pool.map`.
//!
//! ```python
//! pool = multiprocessing.Pool(processes=4)
//! results = [pool.apply_async(func, ('hello world %d' % i,)) for i in range(10)]
//! for r in results: r.wait()
//! for r in results:
//!     if r.ready() and r.successful(): print(r.get())
//! results = [pool.apply(func, ('hello world %d' % i,)) for i in range(10)]
//! return_data = pool.map(func, [1, 2, 4, 5, 7, 8])
//! result = pool.map_async(func, args); result.wait(); print(result.get())
//!
//! def create_thumbnail(filename):
//!     im = Image.open(filename); im.thumbnail((75, 75)); im.save(thumbs/filename)
//! pool.map(create_thumbnail, images)
//! ```
//!
//! `func` sleeps 50 ms here (1 s in Python). The images are real PNGs made
//! for the run, resized with the `image` crate inside the workers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use multiproc::Pool;

use crate::{Error, PATIENCE, Report};

/// The task of the API tour: says which message it got.
fn func(msg: String) -> String {
    std::thread::sleep(Duration::from_millis(50));
    format!("func_return: {msg}")
}

/// What [`pool_api`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolApi {
    /// `ready()` of each `apply_async` result right after submitting (the
    /// tasks take 50 ms, so mostly false).
    pub ready_at_once: Vec<bool>,
    /// Values from `apply_async(...).get()` after `wait`, `ready`, `successful`.
    pub apply_async: Vec<String>,
    /// Values from `apply`, one call at a time.
    pub apply: Vec<String>,
    /// Value of `map`.
    pub map: Vec<String>,
    /// `ready()` of `map_async` right after the call.
    pub map_async_ready_at_once: bool,
    /// Value of `map_async(...).get()`.
    pub map_async: Vec<String>,
}

/// `apply_async` ×10 with `wait`/`ready`/`successful`/`get`, `apply`, `map`,
/// `map_async`, as the seed does.
///
/// # Errors
///
/// A pool or task failed.
pub fn pool_api() -> Result<Report<PoolApi>, Error> {
    let mut lines = vec!["--------apply_async------------".to_string()];
    let pool = Pool::new(4)?;
    let results: Vec<_> = (0..10).map(|i| pool.apply_async(func, (format!("hello world {i}"),))).collect();
    let ready_at_once = results.iter().map(|r| r.ready()).collect();
    lines.push("apply_async: does not block".into());
    for r in &results {
        if !r.wait_timeout(PATIENCE) {
            return Err(Error::Unexpected("an apply_async task did not finish".into()));
        }
    }
    let mut apply_async = Vec::new();
    for r in results {
        if r.ready() && r.successful()? {
            let v = r.get()?;
            lines.push(v.clone());
            apply_async.push(v);
        }
    }
    lines.push("--------apply------------".into());
    let apply: Vec<String> =
        (0..10).map(|i| pool.apply(func, (format!("hello world {i}"),))).collect::<Result<_, _>>()?;
    lines.push("apply: blocks until func returns".into());
    lines.push(format!("{apply:?}"));
    pool.close();
    pool.join_timeout(PATIENCE)?;

    lines.push("--------map------------".into());
    let args: Vec<String> = [1, 2, 4, 5, 7, 8].iter().map(|i| i.to_string()).collect();
    let pool = Pool::new(5)?;
    let map = pool.map(func, args.clone())?;
    lines.push("blocks".into());
    lines.push(format!("{map:?}"));
    pool.close();
    pool.join_timeout(PATIENCE)?;

    lines.push("--------map_async------------".into());
    let pool = Pool::new(5)?;
    let mut result = pool.map_async(func, args);
    let map_async_ready_at_once = result.ready();
    lines.push(format!("ready: {map_async_ready_at_once}"));
    lines.push("does not block".into());
    let map_async = result.get_timeout(PATIENCE)?;
    lines.push(format!("{map_async:?}"));
    Ok(Report {
        lines,
        outcome: PoolApi { ready_at_once, apply_async, apply, map, map_async_ready_at_once, map_async },
    })
}

/// Largest side of a thumbnail.
pub const THUMB_SIZE: u32 = 75;

/// Resizes one image to fit in 75×75 (keeping its aspect ratio) and saves it
/// in `thumbs/` beside it; returns the thumbnail's width and height.
fn create_thumbnail(filename: PathBuf) -> Result<(u32, u32), String> {
    let im = image::open(&filename).map_err(|e| format!("{}: {e}", filename.display()))?;
    // As PIL's `thumbnail`: shrink to fit, never enlarge.
    let thumb =
        if im.width() <= THUMB_SIZE && im.height() <= THUMB_SIZE { im } else { im.thumbnail(THUMB_SIZE, THUMB_SIZE) };
    let base = filename.parent().ok_or("no folder")?;
    let name = filename.file_name().ok_or("no file name")?;
    let save_path = base.join("thumbs").join(name);
    thumb.save(&save_path).map_err(|e| format!("{}: {e}", save_path.display()))?;
    Ok((thumb.width(), thumb.height()))
}

/// What [`thumbnails`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnails {
    /// Each source image: file name and size.
    pub sources: Vec<(String, (u32, u32))>,
    /// Each thumbnail as read back from disk: file name and size.
    pub thumbs: Vec<(String, (u32, u32))>,
}

/// Sizes of the generated images: landscape, portrait, square, small.
const SOURCE_SIZES: [(u32, u32); 8] =
    [(640, 480), (480, 640), (300, 300), (1024, 256), (200, 600), (50, 40), (800, 450), (75, 75)];

/// Makes a folder of PNGs, thumbnails them with `Pool.map`, and reads the
/// thumbnails back.
///
/// # Errors
///
/// The images could not be written or read, or a worker failed.
pub fn thumbnails() -> Result<Report<Thumbnails>, Error> {
    let folder = TempFolder::new("thumbnails")?;
    std::fs::create_dir(folder.path().join("thumbs"))?;
    let mut images = Vec::new();
    let mut sources = Vec::new();
    for (i, &(w, h)) in SOURCE_SIZES.iter().enumerate() {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((i as u32 * 37) % 256) as u8])
        });
        let path = folder.path().join(format!("image_{i}.png"));
        img.save(&path).map_err(|e| Error::Unexpected(format!("cannot write {}: {e}", path.display())))?;
        sources.push((format!("image_{i}.png"), (w, h)));
        images.push(path);
    }
    let mut lines = vec![format!("{} images in {}", images.len(), folder.path().display())];
    let pool = Pool::new(multiproc::cpu_count().min(4))?;
    let made = pool.map(create_thumbnail, images)?;
    pool.close();
    pool.join_timeout(PATIENCE)?;
    let mut thumbs = Vec::new();
    for ((name, (w, h)), reported) in sources.iter().zip(made) {
        let reported = reported.map_err(Error::Unexpected)?;
        let path = folder.path().join("thumbs").join(name);
        let back = image::open(&path).map_err(|e| Error::Unexpected(format!("{}: {e}", path.display())))?;
        let size = (back.width(), back.height());
        if size != reported {
            return Err(Error::Unexpected(format!("{name}: worker reported {reported:?}, file is {size:?}")));
        }
        lines.push(format!("{name}: {w}x{h} -> {}x{}", size.0, size.1));
        thumbs.push((name.clone(), size));
    }
    Ok(Report { lines, outcome: Thumbnails { sources, thumbs } })
}

/// A folder under the system temp dir, removed on drop.
pub(crate) struct TempFolder(PathBuf);

impl TempFolder {
    pub(crate) fn new(what: &str) -> std::io::Result<TempFolder> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("multiproc-seed-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(TempFolder(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
