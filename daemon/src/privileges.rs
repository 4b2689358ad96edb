//! Giving up privileges, before the async runtime starts any thread (capabilities are per
//! thread: threads started earlier would keep them).

use anyhow::{bail, Context};
use caps::CapSet;
use nix::unistd::{setgid, setgroups, setuid, User};

/// Drop the capability bounding set (where we may), optionally become `user`, drop every
/// capability, set no_new_privs and mark the process non-dumpable. Fails if the process is still
/// privileged afterwards.
///
/// The order matters:
/// 1. the bounding set first: dropping from it needs CAP_SETPCAP, which the switch to a user
///    other than root takes away;
/// 2. then the user: its own capabilities go with the switch;
/// 3. then what is left, and no_new_privs;
/// 4. non-dumpable last: every credential change resets it to the `suid_dumpable` default.
pub fn drop_all(user: Option<&str>) -> anyhow::Result<()> {
    // "Where it may": an unprivileged process cannot, and has nothing to gain from it either.
    let drops_bounding_set =
        caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false);
    if drops_bounding_set {
        for cap in caps::read(None, CapSet::Bounding).context("cannot read the bounding set")? {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("cannot drop {cap} from the bounding set"))?;
        }
    }
    if let Some(name) = user {
        become_user(name)?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        // Only when there is something to clear: under systemd the unit's system-call filter
        // refuses capset(2), and there is nothing to drop anyway.
        if !caps::read(None, set)
            .context("cannot read capabilities")?
            .is_empty()
        {
            caps::clear(None, set)
                .with_context(|| format!("cannot clear the {set:?} capabilities"))?;
        }
    }
    nix::sys::prctl::set_no_new_privs().context("cannot set no_new_privs")?;
    // The root CA key, the server key and passphrases on their way to the hash are in memory: no
    // core dump, no same-user ptrace or /proc/PID/mem.
    nix::sys::prctl::set_dumpable(false).context("cannot mark the process non-dumpable")?;

    // Verify rather than trust the calls above.
    let mut sets = vec![
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ];
    if drops_bounding_set {
        sets.push(CapSet::Bounding);
    }
    for set in sets {
        let held = caps::read(None, set).context("cannot read capabilities")?;
        if !held.is_empty() {
            bail!(
                "still holding {set:?} capabilities {held:?} after dropping them; refusing to run"
            );
        }
    }
    if !nix::sys::prctl::get_no_new_privs().unwrap_or(false) {
        bail!("no_new_privs is not set; refusing to run");
    }
    if nix::sys::prctl::get_dumpable().unwrap_or(true) {
        bail!("the process is still dumpable; refusing to run");
    }
    Ok(())
}

fn become_user(name: &str) -> anyhow::Result<()> {
    let user = User::from_name(name)
        .with_context(|| format!("cannot look up user '{name}'"))?
        .with_context(|| format!("no such user '{name}'"))?;
    // Supplementary groups: none. The daemon needs no group access.
    setgroups(&[user.gid]).context("cannot set supplementary groups")?;
    setgid(user.gid).context("cannot change group")?;
    setuid(user.uid).context("cannot change user")?;
    if nix::unistd::getuid() != user.uid || nix::unistd::geteuid() != user.uid {
        bail!("still not running as '{name}' after switching user");
    }
    Ok(())
}
