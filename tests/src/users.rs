//! Real OS users and groups, unique to one test run and deleted on drop.
//!
//! Users get primary group `users` (not a per-user group) and, if asked, the test's admin group
//! as a *supplementary* group, so the daemon must look at group membership, not only at the gid
//! SO_PEERCRED reports.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::TestDir;

/// Primary group of every test user.
const PRIMARY_GROUP: &str = "users";

/// Run a user/group administration command, retrying while another test holds the lock on
/// /etc/passwd or /etc/group.
fn admin_command(program: &str, args: &[&str]) {
    let mut last = String::new();
    for _ in 0..100 {
        let out = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        if out.status.success() {
            return;
        }
        last = format!(
            "{:?}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if last.contains("already exists") || last.contains("does not exist") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50 + rand_ms()));
    }
    panic!("{program} {} failed: {last}", args.join(" "));
}

/// Best effort (used in Drop): retry a few times, never panic.
fn admin_command_quiet(program: &str, args: &[&str]) {
    for _ in 0..50 {
        match Command::new(program).args(args).output() {
            Ok(out) if out.status.success() => return,
            Ok(out) if String::from_utf8_lossy(&out.stderr).contains("does not exist") => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(50 + rand_ms())),
            Err(_) => return,
        }
    }
    eprintln!("warning: {program} {} kept failing", args.join(" "));
}

fn rand_ms() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 100
}

/// A group created for one test (the daemon's `--admin-group`). Deleted on drop; declare it
/// before the users that belong to it, so that they are dropped first.
#[derive(Debug)]
pub struct Group {
    /// Its name, `mpt-adm-<random>`.
    pub name: String,
    /// Its gid.
    pub gid: u32,
}

impl Group {
    /// Create a fresh admin group.
    pub fn create_admin() -> Group {
        let name = format!("mpt-adm-{}", crate::random_suffix());
        admin_command("groupadd", &[&name]);
        let gid = nix::unistd::Group::from_name(&name)
            .expect("look up group")
            .unwrap_or_else(|| panic!("group {name} missing right after groupadd"))
            .gid
            .as_raw();
        Group { name, gid }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        admin_command_quiet("groupdel", &[&self.name]);
    }
}

/// A user created for one test, with a home directory it owns inside the test directory.
#[derive(Debug)]
pub struct User {
    /// Login name, `mpt<random>`.
    pub name: String,
    /// Uid.
    pub uid: u32,
    /// Primary gid (group `users`).
    pub gid: u32,
    /// Home directory (0700, owned by the user); `XDG_DATA_HOME` is `<home>/.local/share`.
    pub home: PathBuf,
}

impl User {
    /// Create a user whose home lives in `dir`; a supplementary member of `admin` if given.
    pub fn create(dir: &TestDir, admin: Option<&Group>) -> User {
        User::create_in(dir, admin.as_slice())
    }

    /// Create a user whose home lives in `dir`, a supplementary member of each of `groups`.
    pub fn create_in(dir: &TestDir, groups: &[&Group]) -> User {
        User::create_with(dir, groups, None)
    }

    /// Create a user with the uid `uid` whose home lives in `dir`: one of another user's
    /// subordinate uids, say, as a user database (nss-systemd, a directory) may name them.
    pub fn create_as_uid(dir: &TestDir, uid: u32) -> User {
        User::create_with(dir, &[], Some(uid))
    }

    fn create_with(dir: &TestDir, groups: &[&Group], uid: Option<u32>) -> User {
        let name = format!("mpt{}", crate::random_suffix());
        let homes = dir.subdir("home");
        let home = homes.join(&name);
        let home_str = home.to_str().expect("utf-8 path").to_string();
        let mut args = vec![
            "--no-create-home",
            "--home-dir",
            &home_str,
            "--shell",
            "/usr/sbin/nologin",
            "--no-user-group",
            "-g",
            PRIMARY_GROUP,
        ];
        let names = groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        if !groups.is_empty() {
            args.push("-G");
            args.push(&names);
        }
        let uid_text = uid.map(|uid| uid.to_string());
        if let Some(uid) = &uid_text {
            args.push("--uid");
            args.push(uid);
        }
        args.push(&name);
        admin_command("useradd", &args);
        let entry = nix::unistd::User::from_name(&name)
            .expect("look up user")
            .unwrap_or_else(|| panic!("user {name} missing right after useradd"));
        let user = User {
            name,
            uid: entry.uid.as_raw(),
            gid: entry.gid.as_raw(),
            home,
        };
        std::fs::create_dir_all(&user.home).expect("create home");
        nix::unistd::chown(
            &user.home,
            Some(entry.uid),
            Some(nix::unistd::Gid::from_raw(user.gid)),
        )
        .expect("chown home");
        std::fs::set_permissions(&user.home, std::fs::Permissions::from_mode(0o700))
            .expect("chmod home");
        user
    }

    /// `$XDG_DATA_HOME` of the user's commands.
    pub fn xdg_data_home(&self) -> PathBuf {
        self.home.join(".local").join("share")
    }

    /// Directory of the client certificate.
    pub fn cert_dir(&self) -> PathBuf {
        self.xdg_data_home().join("multipass-client-certificate")
    }

    /// The client certificate file.
    pub fn cert_path(&self) -> PathBuf {
        self.cert_dir().join("multipass_cert.pem")
    }

    /// The client key file.
    pub fn key_path(&self) -> PathBuf {
        self.cert_dir().join("multipass_cert_key.pem")
    }

    /// The DER of the user's client certificate (exactly one in the file, or panic).
    pub fn cert_der(&self) -> Vec<u8> {
        let bytes = std::fs::read(self.cert_path()).unwrap_or_else(|e| {
            panic!(
                "cannot read client certificate of {} at {}: {e}",
                self.name,
                self.cert_path().display()
            )
        });
        let certs = crate::pem::certificates(&bytes);
        assert_eq!(
            certs.len(),
            1,
            "client certificate file of {} should hold exactly one certificate",
            self.name
        );
        certs.into_iter().next().expect("one certificate")
    }

    /// A command that runs `program` as this user (uid, gid and supplementary groups from the
    /// user database) with an empty environment except `PATH`, `HOME` and `envs`.
    pub fn command(&self, program: &Path, envs: &[(&str, String)]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg("--reuid")
            .arg(self.uid.to_string())
            .arg("--regid")
            .arg(self.gid.to_string())
            .arg("--init-groups")
            .arg("env")
            .arg("-i")
            .arg("PATH=/usr/bin:/bin")
            .arg(format!("HOME={}", self.home.display()));
        for (key, value) in envs {
            cmd.arg(format!("{key}={value}"));
        }
        cmd.arg(program).current_dir(&self.home).env_clear();
        cmd.env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin");
        cmd
    }
}

impl Drop for User {
    fn drop(&mut self) {
        admin_command_quiet("userdel", &[&self.name]);
    }
}

/// The first uid of `name`'s subordinate range, given one if `useradd` did not.
pub fn subordinate_range(name: &str) -> u32 {
    let ranges = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let mine = ranges.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name)).then(|| fields.next()?.parse().ok())?
    });
    if let Some(first) = mine {
        return first;
    }
    let end = ranges
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':').skip(1);
            let first: u64 = fields.next()?.parse().ok()?;
            Some(first + fields.next()?.parse::<u64>().ok()?)
        })
        .max()
        .unwrap_or(100_000);
    let first = u32::try_from(end.max(100_000)).expect("a free range");
    let status = Command::new("usermod")
        .args([
            "--add-subuids",
            &format!("{first}-{}", first + 65_535),
            name,
        ])
        .status()
        .expect("usermod");
    assert!(status.success(), "usermod --add-subuids: {status}");
    first
}
