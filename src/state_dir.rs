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

/// Creates `dir` if needed and proves that files can be created, synced and removed in it, so a
/// state directory the proxy cannot write is refused at start-up rather than found out at the
/// first offset-map write (which would cost every replica a full sync after the next restart).
/// The error text names the directory and the step that failed.
pub fn check_writable(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let written = (|| {
        let mut file = File::create(&probe)?;
        file.write_all(b"probe")?;
        file.sync_all()
    })();
    let removed = fs::remove_file(&probe);
    match (written, removed) {
        (Err(e), _) => Err(format!("{} is not writable: {e}", dir.display())),
        (Ok(()), Err(e)) => Err(format!(
            "cannot remove files in {} (needed to replace state files): {e}",
            dir.display()
        )),
        (Ok(()), Ok(())) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_directory_passes_and_keeps_no_probe() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        check_writable(&state).unwrap();
        assert_eq!(fs::read_dir(&state).unwrap().count(), 0);
    }

    #[test]
    fn a_path_under_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let e = check_writable(&file.join("state")).unwrap_err();
        assert!(e.contains("cannot create"), "{e}");
    }
}
