//! Bulkhead's partition configuration.
//!
//! A human writes a TOML file; the host tool parses it into [`Config`],
//! validates it, and compiles it into a postcard blob that the loader puts
//! on the ESP. The hypervisor decodes the same blob into the same types and
//! validates it again before starting any partition, so a blob that was
//! tampered with or built by an older tool is refused with the same messages.
//!
//! [`validate`] returns every problem as a [`ConfigError`] that names the
//! partition (index and name) and the field. The hypervisor starts no
//! partition when [`has_global_errors`] is true, and otherwise skips exactly
//! the partitions in [`partitions_with_errors`]: a conflict between two
//! partitions is always charged to the later one, so the earlier one runs.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod error;
mod model;
mod validate;

pub use error::{
    ConfigError, ErrorKind, MAX_PARTITIONS, PAGE_SIZE, SPI_INTIDS, has_global_errors,
    partitions_with_errors,
};
pub use model::*;
pub use validate::{emulated_windows, validate};

/// Bumped on every incompatible change of the blob format.
/// 2: `platform`, `passthrough`, `interrupts`, `console`, `shared`, `on_fault = "inject"`.
/// 3: the name of the source file, for messages at boot.
/// 4: `console = "pl011"`.
/// 5: `image.kind = "linux"`, `image.initrd`, `image.bootargs`.
pub const BLOB_VERSION: u32 = 5;

/// The first bytes of every blob.
pub const BLOB_MAGIC: [u8; 4] = *b"BHCF";

/// Encodes a configuration into the blob the hypervisor reads: the magic,
/// then postcard-encoded version and configuration.
pub fn to_blob(config: &Config) -> alloc::vec::Vec<u8> {
    to_blob_from(config, "")
}

/// Like [`to_blob`], recording the name of the file the configuration came
/// from so that errors found at boot can name it too.
pub fn to_blob_from(config: &Config, source: &str) -> alloc::vec::Vec<u8> {
    let blob = Blob {
        version: BLOB_VERSION,
        source: alloc::string::String::from(source),
        config: config.clone(),
    };
    let mut bytes = alloc::vec::Vec::from(BLOB_MAGIC);
    // Serializing plain data into a growable buffer cannot fail.
    bytes.extend(postcard::to_allocvec(&blob).expect("serializing a configuration into memory"));
    bytes
}

/// Why a blob could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobError {
    /// The blob was written for another format version.
    Version {
        /// The version in the blob.
        found: u32,
    },
    /// The bytes do not start with [`BLOB_MAGIC`].
    NotABlob,
    /// The bytes are a blob of the right version that does not decode.
    Malformed,
}

impl core::fmt::Display for BlobError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BlobError::Version { found } => {
                write!(
                    f,
                    "configuration blob version {found}, expected {BLOB_VERSION}"
                )
            }
            BlobError::NotABlob => write!(f, "not a Bulkhead configuration blob (bad magic)"),
            BlobError::Malformed => write!(f, "configuration blob is malformed"),
        }
    }
}

/// Decodes a blob written by [`to_blob`].
///
/// # Errors
/// [`BlobError::NotABlob`] without the magic, [`BlobError::Version`] for a
/// blob of another version, [`BlobError::Malformed`] for anything else that
/// does not decode.
pub fn from_blob(bytes: &[u8]) -> Result<Config, BlobError> {
    from_blob_with_source(bytes).map(|(config, _)| config)
}

/// Decodes a blob and the name of the file it was compiled from (empty when
/// unknown).
///
/// # Errors
/// As [`from_blob`].
pub fn from_blob_with_source(bytes: &[u8]) -> Result<(Config, alloc::string::String), BlobError> {
    let bytes = bytes.strip_prefix(&BLOB_MAGIC).ok_or(BlobError::NotABlob)?;
    let (version, _) = postcard::take_from_bytes::<u32>(bytes).map_err(|_| BlobError::Malformed)?;
    if version != BLOB_VERSION {
        return Err(BlobError::Version { found: version });
    }
    let blob: Blob = postcard::from_bytes(bytes).map_err(|_| BlobError::Malformed)?;
    Ok((blob.config, blob.source))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Blob {
    version: u32,
    source: alloc::string::String,
    config: Config,
}

#[cfg(test)]
mod tests;
