//! Where the captured fixtures (real bytes from real servers) are found, for tests, benches and
//! fuzz seeds: `$PIKA_TTL_FIXTURES`, then `tests/fixtures` in the crate, then `../shared/fixtures`
//! beside the crate, then `/work/shared/fixtures`.

use std::io;
use std::path::PathBuf;

/// The directories searched, in order.
pub fn roots() -> Vec<PathBuf> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut roots: Vec<PathBuf> = ["PIKA_TTL_FIXTURES", "PIKA_TTL_PROXY_FIXTURES"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(PathBuf::from))
        .collect();
    roots.push(crate_dir.join("tests/fixtures"));
    roots.push(crate_dir.join("../shared/fixtures"));
    roots.push(PathBuf::from("/work/shared/fixtures"));
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
        format!("fixture {relative} not found under {roots:?}; set PIKA_TTL_FIXTURES"),
    ))
}
