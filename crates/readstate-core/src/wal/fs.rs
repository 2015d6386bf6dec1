//! The file-system interface of the commit log, and its implementation on a real
//! directory. Tests substitute [`super::memfs::MemFs`], which models the page cache and
//! injects failures.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The file-system operations the log needs, on one flat directory of files named by
/// plain file names. Implementations are test doubles for the *files*, not for the log.
pub trait LogFs: Send + Sync + std::fmt::Debug {
    /// File names in the log directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// A new empty file (truncated if it exists), open for appending.
    fn create(&self, name: &str) -> io::Result<Box<dyn LogFile>>;
    /// An existing file, open for appending at its end.
    fn open_append(&self, name: &str) -> io::Result<Box<dyn LogFile>>;
    fn remove(&self, name: &str) -> io::Result<()>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes creations, renames and removals in the directory durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Truncates a file to `len` bytes and makes that durable.
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;

    /// At most the first `max` bytes of a file, and the file's length. Recovery reads
    /// every segment header before it reads whole segments; the default reads the whole
    /// file.
    fn read_prefix(&self, name: &str, max: usize) -> io::Result<(Vec<u8>, u64)> {
        let mut data = self.read(name)?;
        let len = data.len() as u64;
        data.truncate(max);
        Ok((data, len))
    }

    /// How to name `name` to an operator (errors, warnings): the default is the name
    /// itself; [`DirFs`] gives the full path.
    fn display_name(&self, name: &str) -> String {
        name.to_owned()
    }
}

/// A file of the log, open for appending.
pub trait LogFile: Send + std::fmt::Debug {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// fdatasync.
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The log in a real directory.
#[derive(Debug)]
pub struct DirFs {
    dir: PathBuf,
}

impl DirFs {
    /// Uses `dir`, creating it (and making its entry durable) if it does not exist.
    pub fn open(dir: &Path) -> io::Result<DirFs> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(DirFs {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl LogFs for DirFs {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(name))
    }

    fn read_prefix(&self, name: &str, max: usize) -> io::Result<(Vec<u8>, u64)> {
        let file = File::open(self.path(name))?;
        let len = file.metadata()?.len();
        let mut data = Vec::with_capacity(max.min(usize::try_from(len).unwrap_or(max)));
        file.take(max as u64).read_to_end(&mut data)?;
        Ok((data, len))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path(name))?;
        Ok(Box::new(DirFile(file)))
    }

    fn open_append(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new().append(true).open(self.path(name))?;
        Ok(Box::new(DirFile(file)))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path(from), self.path(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn display_name(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

#[derive(Debug)]
struct DirFile(File);

impl LogFile for DirFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut self.0, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}
