//! A small tmpfs mounted for one test (disk full, read-only), unmounted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a given size at a path; lazily unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

fn mount(args: &[&str]) {
    let out = Command::new("mount")
        .args(args)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (e.g. `"512k"`) at `path` (created if missing), mode 0755.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create the mount point");
        let options = format!("size={size},mode=0755");
        mount(&[
            "-t",
            "tmpfs",
            "-o",
            &options,
            "tmpfs",
            path.to_str().expect("utf-8"),
        ]);
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remount it read-only (`true`) or read-write.
    pub fn set_read_only(&self, read_only: bool) {
        let options = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        mount(&["-o", options, self.path.to_str().expect("utf-8")]);
    }

    /// Fill it: write a file `name` until the file system says it is full. Returns its size.
    pub fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let path = self.path.join(name);
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0u8; 4096];
        let mut size = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => size += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        size
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
