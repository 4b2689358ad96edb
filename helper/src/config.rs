//! The helper's configuration. It comes from the helper's own command line (set by the unit file
//! or whoever starts it as root), never from a caller: a caller cannot point the helper at
//! another socket or directory.

use std::path::PathBuf;

use clap::Args;

/// Where the service's files are.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// The daemon's socket.
    #[arg(long, global = true, default_value = trust::paths::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// The daemon's state directory.
    #[arg(long, global = true, default_value = trust::paths::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// The admin group of the restricted socket [default: first of multipass, sudo, admin, wheel].
    #[arg(long, global = true)]
    pub admin_group: Option<String>,
}

impl Config {
    /// The state directory's layout.
    pub fn layout(&self) -> trust::DataDir {
        trust::DataDir::new(&self.data_dir)
    }

    /// Whether every path is the built-in default.
    pub fn is_default(&self) -> bool {
        self.socket.as_os_str() == trust::paths::DEFAULT_SOCKET
            && self.data_dir.as_os_str() == trust::paths::DEFAULT_DATA_DIR
            && self.admin_group.is_none()
    }

    /// The admin policy.
    pub fn admin(&self) -> trust::access::AdminPolicy {
        trust::access::AdminPolicy::new(self.admin_group.clone())
    }
}
