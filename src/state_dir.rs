//! Files in the state directory, for both relays: finding them by name, replacing one
//! atomically and durably, and making a directory change durable.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Files in `dir` (which need not exist yet) named `<prefix><middle><suffix>`, with their
/// middles, in name order.
pub fn files_named(dir: &Path, prefix: &str, suffix: &str) -> io::Result<Vec<(PathBuf, String)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let middle = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(prefix)?.strip_suffix(suffix))
            .map(str::to_string);
        if let Some(middle) = middle {
            found.push((path, middle));
        }
    }
    found.sort();
    Ok(found)
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new file: a
/// temporary file beside it (`<path>.tmp`, removed again if the write fails), `fsync`, rename,
/// directory `fsync`.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// `fsync` a directory so a rename or a deletion in it is durable; best effort (not every
/// filesystem allows opening a directory for this, and without it only durability against a
/// power loss is weaker).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
