//! Where the captured fixtures (real bytes from real servers) are found, for tests, benches and
//! fuzz seeds: `tests/fixtures/` of this repository, one folder per server version
//! (`pika-3.5.4/`, `pika-4.0.1/`, `redis-7.0.15/`, `redis-7.4.1/`), each with a description of
//! every capture beside it. `$PIKA_TTL_FIXTURES` (or its older spelling
//! `$PIKA_TTL_PROXY_FIXTURES`) names a directory that is searched first, to try other captures.

use std::io;
use std::path::PathBuf;

/// The directories searched, in order: the override, if set, then the repository's own.
pub fn roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = ["PIKA_TTL_FIXTURES", "PIKA_TTL_PROXY_FIXTURES"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(PathBuf::from))
        .collect();
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
    roots
}

/// The bytes of fixture `relative` (e.g. `pika-3.5.4/session1-master-binlog-write2file0.bin`).
pub fn read(relative: &str) -> io::Result<Vec<u8>> {
    let roots = roots();
    for root in &roots {
        if let Ok(bytes) = std::fs::read(root.join(relative)) {
            return Ok(bytes);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("fixture {relative} not found under {roots:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every capture folder is in the repository, none is looked for outside it.
    #[test]
    fn the_vendored_folders_are_present() {
        let own = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        assert_eq!(roots().last(), Some(&own));
        for dir in ["pika-3.5.4", "pika-4.0.1", "redis-7.0.15", "redis-7.4.1"] {
            assert!(
                own.join(dir).is_dir(),
                "{dir} missing under {}",
                own.display()
            );
        }
        assert!(read("pika-4.0.1/session1-master-binlog-write2file0.bin").is_ok());
        assert!(read("no-such-version/none.bin").is_err());
    }
}
