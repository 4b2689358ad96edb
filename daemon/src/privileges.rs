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
///
/// Every cold start pays for this before its first answer, so each set is read and written in
/// as few system calls as do the job: the `caps` crate's reads of the ambient and bounding sets
/// ask about each capability in turn, after as many calls again to find which ones the kernel
/// knows, which made about 300 `prctl` calls as root and 170 as another user
/// (docs/PERFORMANCE.md).
pub fn drop_all(user: Option<&str>) -> anyhow::Result<()> {
    // "Where it may": an unprivileged process cannot, and has nothing to gain from it either.
    let drops_bounding_set =
        caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false);
    if drops_bounding_set {
        for cap in in_order() {
            if let Err(e) = caps::drop(None, CapSet::Bounding, cap) {
                // The first capability the running kernel does not know ends the list.
                if in_bounding_set(cap)?.is_none() {
                    break;
                }
                return Err(e).with_context(|| format!("cannot drop {cap} from the bounding set"));
            }
        }
    }
    if let Some(name) = user {
        become_user(name)?;
    }
    // One call clears the ambient set, whatever it holds (the kernel has had it since 4.3).
    caps::clear(None, CapSet::Ambient).context("cannot clear the ambient capabilities")?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
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

    // Verify rather than trust the calls above. The ambient set needs no reading of its own:
    // the kernel keeps it within the permitted and inheritable sets (capabilities(7): "no
    // capability can ever be ambient if it is not both permitted and inheritable"), and both
    // are checked empty here.
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        let held = caps::read(None, set).context("cannot read capabilities")?;
        if !held.is_empty() {
            bail!(
                "still holding {set:?} capabilities {held:?} after dropping them; refusing to run"
            );
        }
    }
    if drops_bounding_set {
        let mut held = Vec::new();
        for cap in in_order() {
            match in_bounding_set(cap)? {
                Some(true) => held.push(cap),
                Some(false) => {}
                None => break,
            }
        }
        if !held.is_empty() {
            bail!(
                "still holding Bounding capabilities {held:?} after dropping them; refusing to run"
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

/// Whether `cap` is in the calling thread's bounding set, or `None` if the running kernel does
/// not know it (`PR_CAPBSET_READ` answers EINVAL). Any other failure is an error, not the end of
/// the list: a capability left undropped or unchecked must not pass for one the kernel lacks.
#[allow(unsafe_code)]
fn in_bounding_set(cap: caps::Capability) -> anyhow::Result<Option<bool>> {
    // SAFETY: PR_CAPBSET_READ reads one flag of the calling thread; no memory is passed.
    let answer = unsafe {
        libc::prctl(
            libc::PR_CAPBSET_READ,
            libc::c_ulong::from(cap.index()),
            0,
            0,
            0,
        )
    };
    if answer >= 0 {
        return Ok(Some(answer == 1));
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EINVAL) {
        return Ok(None);
    }
    Err(error).with_context(|| format!("cannot read {cap} in the bounding set"))
}

/// The capabilities the `caps` crate names, in the kernel's order, so that the first one the
/// running kernel does not know (older than the crate) ends what it knows.
fn in_order() -> impl Iterator<Item = caps::Capability> {
    let mut all: Vec<_> = caps::all().into_iter().collect();
    all.sort_by_key(|cap| cap.index());
    all.into_iter()
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
