//! Errors of shared memory.

use std::io;

/// Why a [`SharedMemory`](crate::SharedMemory) operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedMemoryError {
    /// `create` with a name that is taken (Python's `FileExistsError`);
    /// attach with `open` instead, or pick another name.
    #[error("shared memory {name:?} already exists")]
    FileExists {
        /// The name asked for.
        name: String,
    },
    /// `open` of a name that does not exist (Python's `FileNotFoundError`).
    #[error("shared memory {name:?} does not exist")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The name is not usable: it must be 1 to 250 characters without `/`
    /// (a leading `/` is allowed and ignored), NUL or newline.
    #[error("invalid shared memory name {name:?} (1-250 characters, no '/', NUL or newline)")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A segment must be at least one byte long.
    #[error("shared memory size must be at least 1 byte")]
    InvalidSize,
    /// A read or write outside the segment.
    #[error("bytes {start}..{end} are outside the {size}-byte shared memory")]
    OutOfRange {
        /// First byte asked for.
        start: usize,
        /// One past the last byte asked for.
        end: usize,
        /// Size of the segment.
        size: usize,
    },
    /// The file of a named segment was cut short by another process (any
    /// process that can open the name can): the bytes asked for lie past
    /// its end, where a read or write would kill this process with SIGBUS.
    #[error(
        "shared memory {name:?} was cut to {file_size} bytes by another process; bytes {start}..{end} lie past its \
         end (touching them would crash this process with SIGBUS)"
    )]
    Truncated {
        /// The segment's name.
        name: String,
        /// The file's size now.
        file_size: u64,
        /// First byte asked for.
        start: usize,
        /// One past the last byte asked for.
        end: usize,
    },
    /// The OS refused (out of memory, too many descriptors, permissions…).
    #[error(transparent)]
    Io(#[from] io::Error),
}
