//! What a pipeline is made of, as the user writes it: [`PipelineSpec`],
//! given to [`Server::add_pipeline`](crate::Server::add_pipeline), which
//! starts it (`pipeline.rs`).

use std::marker::PhantomData;
use std::sync::Arc;

use multiproc::{AsyncResult, Connection, Pool, ProcessBuilder, Task};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::items::Items;
use crate::lane::LaneSpawner;
use crate::preprocess::PreprocessLoop;

/// Runs postprocessing on one model output in the pool.
pub(crate) type PostFn<O, P> = Arc<dyn Fn(&Pool, O) -> AsyncResult<Result<P, String>> + Send + Sync>;

/// A value that travels between a pipeline's stages (and so between
/// processes): encoded with serde, owned and sendable. Every such type is
/// one; nothing to implement.
pub trait PipelineItem: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> PipelineItem for T {}

/// A pipeline to add with [`Server::add_pipeline`](crate::Server::add_pipeline): `R` requests are
/// preprocessed into the model's input `I`; the model answers `O`; an
/// optional postprocessing step turns it into `P` (without one, `P` is `O`).
///
/// The steps are plain `fn` items (or non-capturing closures), run in
/// worker processes of this same binary: preprocessing in processes of its
/// own, postprocessing in a pool.
pub struct PipelineSpec<R, I, O, P> {
    pub(crate) name: String,
    pub(crate) model: String,
    pub(crate) preprocess: LaneSpawner,
    pub(crate) preprocess_processes: usize,
    pub(crate) postprocess: Option<(PostFn<O, P>, usize)>,
    pub(crate) capacity: usize,
    pub(crate) chunk: usize,
    _types: Types<R, I, O, P>,
}

/// The stage types, carried by a pipeline spec.
type Types<R, I, O, P> = PhantomData<fn(R, O) -> (I, P)>;

impl<R, I, O, P> std::fmt::Debug for PipelineSpec<R, I, O, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineSpec")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("preprocess_processes", &self.preprocess_processes)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<R, I, O> PipelineSpec<R, I, O, O>
where
    R: PipelineItem,
    I: PipelineItem,
    O: PipelineItem,
{
    /// A pipeline called `name`: `preprocess` runs in `processes` processes
    /// (each fed chunks of requests by a thread of its own), its outputs go
    /// to the default version of `model`.
    pub fn new<F>(name: impl Into<String>, model: impl Into<String>, preprocess: F, processes: usize) -> Self
    where
        F: Task<(R,), Result<I, String>>,
    {
        let pre: LaneSpawner = Arc::new(move |builder: ProcessBuilder, lane: Connection<Items>| {
            let body = PreprocessLoop(preprocess, PhantomData::<fn(R) -> I>);
            builder.spawn(body, (lane,)).map_err(|e| e.to_string())
        });
        PipelineSpec {
            name: name.into(),
            model: model.into(),
            preprocess: pre,
            preprocess_processes: processes.max(1),
            postprocess: None,
            capacity: 4096,
            chunk: 256,
            _types: PhantomData,
        }
    }

    /// Adds a postprocessing step run in a pool of `processes` processes.
    pub fn postprocess<G, P>(self, postprocess: G, processes: usize) -> PipelineSpec<R, I, O, P>
    where
        G: Task<(O,), Result<P, String>>,
        P: PipelineItem,
    {
        let post: PostFn<O, P> = Arc::new(move |pool: &Pool, item: O| pool.apply_async(postprocess, (item,)));
        PipelineSpec {
            name: self.name,
            model: self.model,
            preprocess: self.preprocess,
            preprocess_processes: self.preprocess_processes,
            postprocess: Some((post, processes.max(1))),
            capacity: self.capacity,
            chunk: self.chunk,
            _types: PhantomData,
        }
    }
}

impl<R, I, O, P> PipelineSpec<R, I, O, P>
where
    R: PipelineItem,
    I: PipelineItem,
    O: PipelineItem,
    P: PipelineItem,
{
    /// The most requests inside the pipeline at once (default 4096).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The most requests per chunk handed to a preprocessing process (default 256).
    pub fn chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model it feeds.
    pub fn model(&self) -> &str {
        &self.model
    }
}
