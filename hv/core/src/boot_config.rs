//! The configuration at boot: decode the loader's blob and validate it
//! again, as every architecture's hypervisor does before starting anything.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bulkhead_config::Config;

/// Decodes and validates the configuration `blob`, logging every problem.
/// Returns the configuration and, per partition, the reason it must not be
/// started (its own validation errors, naming the source file); `None` when
/// the run must end: the blob is unreadable or has errors that concern no
/// single partition.
pub fn check(blob: &[u8]) -> Option<(Config, Vec<Option<String>>)> {
    let (config, source) = match bulkhead_config::from_blob_with_source(blob) {
        Ok(decoded) => decoded,
        Err(e) => {
            log::error!("configuration: {e}");
            return None;
        }
    };
    let source = if source.is_empty() { String::from("configuration") } else { source };
    log::info!("configuration: {source}, {} partition(s)", config.partitions.len());
    let errors = bulkhead_config::validate(&config);
    for e in &errors {
        log::error!("{source}: {e}");
    }
    if bulkhead_config::has_global_errors(&errors) {
        log::error!("configuration rejected: errors outside any partition; no partition is started");
        return None;
    }
    let mut refused = alloc::vec![None; config.partitions.len()];
    for e in errors {
        if let Some(slot) = e.partition_index.and_then(|i| refused.get_mut(i)) {
            slot.get_or_insert(format!("{source}: {e}"));
        }
    }
    Some((config, refused))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_config::{Image, ImageKind, MemoryAttribute, MemoryRegion, Partition, Permissions};

    fn partition(name: &str, cpu: u32) -> Partition {
        Partition {
            name: name.into(),
            cpus: alloc::vec![cpu],
            image: Image {
                file: "guest.bin".into(),
                kind: ImageKind::Raw,
                load: 0x4000_0000,
                entry: None,
                initrd: None,
                bootargs: String::new(),
            },
            memory: alloc::vec![MemoryRegion {
                guest: 0x4000_0000,
                size: 0x10_0000,
                backing: Default::default(),
                attr: MemoryAttribute::NormalWb,
                perms: Permissions::parse("rwx").unwrap(),
                dma: false,
                shared: false,
            }],
            on_fault: Default::default(),
            passthrough: alloc::vec![],
            interrupts: alloc::vec![],
            console: Default::default(),
            io_ports: alloc::vec![],
            pci: alloc::vec![],
            gpu: None,
        }
    }

    #[test]
    fn a_good_blob_starts_every_partition() {
        let config = Config { partitions: alloc::vec![partition("a", 0), partition("b", 1)], ..Default::default() };
        let (decoded, refused) = check(&bulkhead_config::to_blob_from(&config, "demo.toml")).unwrap();
        assert_eq!(decoded, config);
        assert_eq!(refused, [None, None]);
    }

    #[test]
    fn partition_errors_refuse_that_partition_only_and_name_the_file() {
        let config = Config { partitions: alloc::vec![partition("a", 1), partition("b", 1)], ..Default::default() };
        let (_, refused) = check(&bulkhead_config::to_blob_from(&config, "demo.toml")).unwrap();
        assert_eq!(refused[0], None);
        let reason = refused[1].as_deref().unwrap();
        assert!(reason.starts_with("demo.toml: partition 'b', field 'cpus[0]'"), "{reason}");
    }

    #[test]
    fn unreadable_blobs_and_global_errors_end_the_run() {
        assert!(check(b"not a blob").is_none());
        let empty = Config { partitions: alloc::vec![], ..Default::default() };
        assert!(check(&bulkhead_config::to_blob(&empty)).is_none());
    }
}
