//! Seed 004 (`python多进程实战`): `Pool.imap` over a folder of files with a
//! progress bar, the results concatenated into one output file.
//!
//! ```python
//! sysInfo_list = ['我通过了好友请求，现在你俩可以开始聊天了', ..., '微信红包']
//! params = [(path, sysInfo_list) for path in paths]
//! with Pool(20) as p:
//!     res = list(tqdm(p.imap(extract_data, params), total=len(params), desc='extract_data'))
//! all_df = [df for dfs in res for df in dfs]
//! pd.concat(all_df).to_excel(save_path)
//! ```
//!
//! The data files here are generated chat logs (one message per line, some of
//! them system notices); `extract_data` drops the notices and keeps the
//! rest. The bar (indicatif) shows count, rate and time left on stderr.

use std::io::Write;
use std::path::PathBuf;

use multiproc::Pool;
use multiproc::pool::{ProgressBar, ProgressStyle};

use crate::seed_001_pool::TempFolder;
use crate::{Error, Report};

/// System notices to drop (the seed's `sysInfo_list`).
pub const SYSTEM_NOTICES: [&str; 5] = [
    "我通过了好友请求，现在你俩可以开始聊天了",
    "我通过了你的朋友验证请求，现在我们可以开始聊天了",
    "已通过你的朋友验证请求，现在可以开始聊天了",
    "不支持此消息，请在手机上查看",
    "微信红包",
];

/// Reads one chat log and keeps the lines that are not system notices.
fn extract_data((path, notices): (PathBuf, Vec<String>)) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.lines().filter(|l| !notices.iter().any(|n| l.ends_with(n.as_str()))).map(str::to_string).collect())
}

/// What [`imap_progress`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapProgress {
    /// Files read.
    pub files: usize,
    /// Lines in all files.
    pub lines_in: usize,
    /// Lines kept, counted while writing the output.
    pub lines_kept: usize,
    /// Lines the output file holds, read back.
    pub output_lines: Vec<String>,
    /// The lines expected, computed in this process.
    pub expected: Vec<String>,
    /// The progress bar's position at the end.
    pub bar_position: u64,
}

/// Message `m` of chat log `f`: every seventh is a system notice.
fn message(f: usize, m: usize) -> String {
    if (f + m).is_multiple_of(7) {
        format!("system\t{}", SYSTEM_NOTICES[(f * 31 + m) % SYSTEM_NOTICES.len()])
    } else {
        format!("agent-{f}\tcustomer-{}\tmessage {m} of chat {f}", f * 100 + m)
    }
}

/// Writes 24 chat logs, runs `imap(extract_data)` over them with a progress
/// bar, concatenates the kept lines into `all.txt` and reads it back.
///
/// # Errors
///
/// A file could not be written or read, or a task failed.
pub fn imap_progress() -> Result<Report<ImapProgress>, Error> {
    let folder = TempFolder::new("imap")?;
    let (files, per_file) = (24, 250);
    let mut paths = Vec::new();
    let mut expected = Vec::new();
    for f in 0..files {
        let path = folder.path().join(format!("chat_{f:02}.tsv"));
        let all: Vec<String> = (0..per_file).map(|m| message(f, m)).collect();
        std::fs::write(&path, all.join("\n") + "\n")?;
        expected.extend(all.into_iter().filter(|l| !l.starts_with("system\t")));
        paths.push(path);
    }
    let notices: Vec<String> = SYSTEM_NOTICES.iter().map(|s| s.to_string()).collect();
    let params: Vec<(PathBuf, Vec<String>)> = paths.into_iter().map(|p| (p, notices.clone())).collect();
    let bar = ProgressBar::new(params.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("extract_data {bar:30} {pos}/{len} ({per_sec}, ETA {eta})") {
        bar.set_style(style);
    }
    let out_path = folder.path().join("all.txt");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&out_path)?);
    let pool = Pool::new(4)?;
    let mut lines_kept = 0;
    // The results come in file order, as they finish; each is written at once.
    for kept in pool.with_progress_bar(bar.clone()).imap(extract_data, params) {
        let kept = kept?.map_err(Error::Unexpected)?;
        for line in &kept {
            writeln!(out, "{line}")?;
        }
        lines_kept += kept.len();
    }
    out.flush()?;
    drop(out);
    let output_lines: Vec<String> = std::fs::read_to_string(&out_path)?.lines().map(str::to_string).collect();
    let lines = vec![
        format!("extract_data: {}/{} files", bar.position(), files),
        format!("kept {lines_kept} of {} lines; wrote {}", files * per_file, out_path.display()),
    ];
    let outcome = ImapProgress {
        files,
        lines_in: files * per_file,
        lines_kept,
        output_lines,
        expected,
        bar_position: bar.position(),
    };
    Ok(Report { lines, outcome })
}
