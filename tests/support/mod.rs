//! Test support shared by the integration tests: Pika protocol peers and a relay process.
#![allow(dead_code)]

pub mod pika_peer;
pub mod proxy;

/// A captured fixture file: `$PIKA_TTL_FIXTURES` / `$PIKA_TTL_PROXY_FIXTURES`, then
/// `../shared/fixtures` beside the crate, then `/work/shared/fixtures`.
pub fn fixture(relative: &str) -> Vec<u8> {
    let roots = [
        std::env::var_os("PIKA_TTL_FIXTURES").map(std::path::PathBuf::from),
        std::env::var_os("PIKA_TTL_PROXY_FIXTURES").map(std::path::PathBuf::from),
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")),
        Some(std::path::PathBuf::from("/work/shared/fixtures")),
    ];
    let path = roots
        .into_iter()
        .flatten()
        .map(|r| r.join(relative))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("fixture {relative} not found; set PIKA_TTL_FIXTURES"));
    std::fs::read(path).unwrap()
}
