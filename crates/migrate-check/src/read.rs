//! Reading source files and manifests with as few system calls as a scan of thousands of files can afford:
//! `std::fs::read_to_string` asks for a file's size (and position) before reading it, one or two calls per file
//! that these readers do without.

use std::io::Read;
use std::path::Path;

/// A file's bytes, read into one buffer that every file of a scan reuses.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffer {
    /// Initialized as far as it ever grew (stale bytes past `len` are never read).
    bytes: Vec<u8>,
    len: usize,
}

impl ReadBuffer {
    /// Reads the whole of `file` with `read` calls alone: `File::read_to_string` first asks for the file's size and
    /// position, two more system calls per file, which a buffer that is already large enough does not need.
    pub(crate) fn fill(&mut self, file: &mut std::fs::File) -> std::io::Result<()> {
        self.len = 0;
        loop {
            if self.len == self.bytes.len() {
                // Grown as files need it: a page to start with (most manifests fit), so that a thread that reads
                // only small files touches no more memory than they take.
                self.bytes.resize((2 * self.bytes.len()).max(4096), 0);
            }
            match file.read(&mut self.bytes[self.len..]) {
                Ok(0) => return Ok(()),
                Ok(n) => self.len += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }

    pub(crate) fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.bytes[..self.len])
    }
}

/// The whole text of the file at `path`, read with `read` calls alone into a buffer each thread keeps (manifests
/// are small: one read fills it, the next says the file ended), then copied at its length: a buffer per file, of a
/// size the allocator keeps no cache for, cost more than the copy.
pub(crate) fn read_text(path: &Path) -> std::io::Result<String> {
    thread_local! {
        static BUFFER: std::cell::RefCell<ReadBuffer> = std::cell::RefCell::new(ReadBuffer::default());
    }
    BUFFER.with_borrow_mut(|buffer| {
        buffer.fill(&mut std::fs::File::open(path)?)?;
        match buffer.text() {
            Ok(text) => Ok(text.to_owned()),
            // As `read_to_string` says it.
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8")),
        }
    })
}

/// Whether `accept` holds for one of the Rust files below `dir` (its path and bytes), `target` directories skipped:
/// a text search across a package's files, stopping at the first that answers yes.
pub(crate) fn any_rust_file(dir: &Path, mut accept: impl FnMut(&Path, &[u8]) -> bool) -> bool {
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                if path.file_name().is_some_and(|name| name != "target") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|extension| extension == "rs")
                && std::fs::read(&path).is_ok_and(|bytes| accept(&path, &bytes))
            {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_readers_read_the_whole_file_whatever_its_size() {
        let dir = std::env::temp_dir().join(format!("migrate-check-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut buffer = ReadBuffer::default();
        for size in [0, 1, 4095, 4096, 4097, 64 * 1024, 64 * 1024 + 1, 200_000] {
            let text: String = (0..size).map(|k| char::from(b'a' + (k % 26) as u8)).collect();
            let path = dir.join(format!("{size}.txt"));
            std::fs::write(&path, &text).expect("write a file");
            assert_eq!(read_text(&path).expect("read it"), text);
            buffer.fill(&mut std::fs::File::open(&path).expect("open it")).expect("read it");
            assert_eq!(buffer.text().expect("UTF-8"), text);
        }
        std::fs::write(dir.join("bad.txt"), b"\xff").expect("write a file");
        buffer.fill(&mut std::fs::File::open(dir.join("bad.txt")).expect("open it")).expect("read it");
        assert!(buffer.text().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
