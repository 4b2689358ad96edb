//! Giving up privileges, before the async runtime starts any thread (capabilities are per
//! thread: threads started earlier would keep them).

use anyhow::{bail, Context};
use caps::CapSet;
use nix::unistd::{setgid, setgroups, setuid, User};

/// Optionally become `user`, then drop every capability and set no_new_privs. Fails if the
/// process is still privileged afterwards.
pub fn drop_all(user: Option<&str>) -> anyhow::Result<()> {
    if let Some(name) = user {
        become_user(name)?;
    }
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes below. "Where it
    // may": an unprivileged process cannot, and has nothing to gain from it either.
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::read(None, CapSet::Bounding).context("cannot read the bounding set")? {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("cannot drop {cap} from the bounding set"))?;
        }
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

    // Verify rather than trust the calls above.
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
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
