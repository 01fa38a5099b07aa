//! A model repository on disk, in Triton's layout:
//!
//! ```text
//! <repo>/<model>/config.toml      inputs, outputs, batching, instances… (see [`config`])
//! <repo>/<model>/<N>/model.onnx   version N of an ONNX model
//! <repo>/<model>/<N>/…            version N of a command model (run in that directory)
//! ```
//!
//! Scanning never fails as a whole: a model whose configuration or versions
//! are wrong is kept with its reason, listed as unavailable in the
//! repository index, while the others serve.

pub mod config;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use multiproc_serve::command::{CommandConfig, CommandModel};
use multiproc_serve::{ModelSettings, ModelSpec, ServeError, Server, StartMode, VersionPolicy};

pub use config::{ConfigError, Labels, ModelConfig, Platform, TensorConfig, VersionChoice};

use crate::onnx::{OnnxConfig, OnnxRunner, OnnxTensorSpec};

/// A model directory as found on disk.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The model's name (its directory's name).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its checked configuration and version numbers on disk, or why it
    /// cannot be served.
    pub loaded: Result<(Arc<ModelConfig>, Vec<u64>), ConfigError>,
}

/// Lists the model directories of `root`, sorted by name.
///
/// # Errors
///
/// `root` cannot be read (a model that cannot be read is kept with its
/// reason instead).
pub fn scan(root: &Path) -> std::io::Result<Vec<ModelDir>> {
    let mut names: Vec<String> = std::fs::read_dir(root)?
        .filter_map(Result::ok)
        .filter(is_dir)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names.into_iter().map(|n| scan_model(root, &n)).collect())
}

/// True for a directory, or a symbolic link to one (as Triton follows them:
/// a version directory is often a link to a release).
fn is_dir(entry: &std::fs::DirEntry) -> bool {
    std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir())
}

/// The version a directory's name gives, if it is a version number written
/// as the server writes it back (`1`, not `01` or `+1`: the paths of a
/// version are made from its number, so another spelling would name a
/// directory that does not exist).
fn version_number(name: &str) -> Option<u64> {
    name.parse::<u64>().ok().filter(|v| v.to_string() == name)
}

/// Reads one model directory of `root`.
pub fn scan_model(root: &Path, name: &str) -> ModelDir {
    let dir = root.join(name);
    let loaded = read_model(&dir);
    ModelDir { name: name.to_string(), dir, loaded }
}

fn read_model(dir: &Path) -> Result<(Arc<ModelConfig>, Vec<u64>), ConfigError> {
    let file = dir.join("config.toml");
    let config = ModelConfig::load(&file)?;
    let err = |reason: String| ConfigError { file: dir.to_path_buf(), reason };
    let mut versions: Vec<u64> = std::fs::read_dir(dir)
        .map_err(|e| err(format!("cannot list the version directories: {e}")))?
        .filter_map(Result::ok)
        .filter(is_dir)
        .filter_map(|e| e.file_name().to_str().and_then(version_number))
        .collect();
    versions.sort_unstable();
    if versions.is_empty() {
        return Err(err("no version directory (a directory named by a number, such as 1/)".into()));
    }
    // Only a list of specific versions can select none of those on disk.
    if let VersionChoice::Specific(list) = &config.version_policy
        && !versions.iter().any(|v| list.contains(v))
    {
        return Err(ConfigError {
            file,
            reason: format!(
                "field `version_policy.specific`: {list:?} names no version on disk (versions found: {versions:?})"
            ),
        });
    }
    // Only the versions the policy serves need a model: an old version
    // directory left empty (or half copied) does not stop the others.
    if config.platform == Platform::Onnx {
        for v in &settings(&config).version_policy.select(&versions) {
            let onnx = dir.join(v.to_string()).join("model.onnx");
            if !onnx.is_file() {
                return Err(err(format!("version {v}: {} is missing", onnx.display())));
            }
        }
    }
    Ok((Arc::new(config), versions))
}

/// The multiproc-serve settings a configuration asks for.
pub fn settings(config: &ModelConfig) -> ModelSettings {
    ModelSettings {
        max_batch_size: config.max_batch_size.max(1),
        max_queue_delay: Duration::from_micros(config.max_queue_delay_us),
        preferred_batch_sizes: config.preferred_batch_sizes.clone(),
        instances: config.instances,
        version_policy: match &config.version_policy {
            VersionChoice::Latest(n) => VersionPolicy::Latest(*n),
            VersionChoice::All => VersionPolicy::All,
            VersionChoice::Specific(list) => VersionPolicy::Specific(list.clone()),
        },
        queue_capacity: config.max_queue_size,
        startup_timeout: Duration::from_millis(config.startup_ms),
        call_timeout: config.call_ms.map(Duration::from_millis),
        request_timeout: config.request_ms.map(Duration::from_millis),
        start: if config.lazy { StartMode::Lazy } else { StartMode::Eager },
        restart: config.restart.clone(),
        drain_timeout: Duration::from_millis(config.drain_ms),
    }
}

fn specs(list: &[TensorConfig]) -> Vec<OnnxTensorSpec> {
    list.iter().map(|t| OnnxTensorSpec { name: t.name.clone(), datatype: t.datatype, dims: t.dims.clone() }).collect()
}

/// Registers (or, if it is served already, reloads without downtime) a
/// model in `server`: its versions start now, and traffic moves to them
/// when they are ready. Blocks until then.
///
/// # Errors
///
/// The model's configuration is bad, or its versions did not become ready
/// (a reload then leaves the old versions serving).
pub fn add_model(server: &Server, model: &ModelDir) -> Result<(), ServeError> {
    let (config, versions) = model.loaded.as_ref().map_err(|e| ServeError::NotReady {
        model: model.name.clone(),
        version: None,
        reason: e.to_string(),
    })?;
    let settings = settings(config);
    match &config.platform {
        Platform::Onnx => {
            let spec = versions.iter().fold(ModelSpec::<OnnxRunner>::new(&model.name), |spec, &v| {
                spec.version(
                    v,
                    OnnxConfig {
                        path: model.dir.join(v.to_string()).join("model.onnx"),
                        inputs: specs(&config.inputs),
                        outputs: specs(&config.outputs),
                        max_batch_size: config.max_batch_size,
                    },
                )
            });
            server.add(spec.settings(settings))
        }
        Platform::Command(argv) => {
            let spec = versions.iter().fold(ModelSpec::<CommandModel>::new(&model.name), |spec, &v| {
                let cwd = model.dir.join(v.to_string());
                let program = if argv[0].contains('/') { cwd.join(&argv[0]) } else { PathBuf::from(&argv[0]) };
                let command = argv[1..].iter().fold(CommandConfig::new(program), |c, a| c.arg(a.clone())).cwd(cwd);
                spec.version(v, command)
            });
            server.add(spec.settings(settings))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed however the test ends.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const CONFIG: &str = "platform = \"command\"\ncommand = [\"true\"]\nmax_batch_size = 0\n\
                          [[input]]\nname = \"x\"\ndatatype = \"FP32\"\ndims = [-1]\n\
                          [[output]]\nname = \"y\"\ndatatype = \"FP32\"\ndims = [-1]\n";

    #[test]
    fn versions_are_canonical_numbers_and_links_to_directories_count() {
        let root = Scratch(std::env::temp_dir().join(format!("multiproc-scan-{}", std::process::id())));
        let (repo, releases) = (root.0.join("repo"), root.0.join("releases"));
        for dir in ["repo/plain/01", "repo/plain/+3", "repo/plain/2", "releases/m/4", "releases/v5"] {
            std::fs::create_dir_all(root.0.join(dir)).unwrap();
        }
        std::fs::write(repo.join("plain/config.toml"), CONFIG).unwrap();
        std::fs::write(releases.join("m/config.toml"), CONFIG).unwrap();
        // A model directory and a version directory that are links.
        std::os::unix::fs::symlink(releases.join("m"), repo.join("linked")).unwrap();
        std::os::unix::fs::symlink(releases.join("v5"), repo.join("plain/5")).unwrap();
        let models = scan(&repo).unwrap();
        let found: Vec<(&str, &[u64])> =
            models.iter().map(|m| (m.name.as_str(), m.loaded.as_ref().unwrap().1.as_slice())).collect();
        assert_eq!(found, [("linked", &[4][..]), ("plain", &[2, 5][..])]);
    }
}
