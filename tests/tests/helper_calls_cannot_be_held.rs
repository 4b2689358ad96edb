//! Calls of the helper that polkit never answers cannot hold its places, against a real system
//! bus and a real polkitd.
//!
//! The attack: any user may register a polkit authentication agent for its own process, then
//! call the helper from that process with ALLOW_INTERACTIVE_AUTHORIZATION. polkitd asks the agent
//! (BeginAuthentication), which never answers, and the helper's check of that call waits for
//! polkitd for ever, holding one of the helper's places. Four such users took all 64, and every
//! other call, the daemon's and root's included, was refused as one too many.
//!
//! The helper has at most 2 interactive checks of one user (root excepted) in progress and
//! refuses that user's next interactive call at once as busy; it gives up a check polkit has not
//! answered within its deadline (`serve --polkit-timeout`, 120 s by default), cancels it and
//! refuses the call; and root and the owner of its state directory (the daemon's user) have
//! places of their own beyond the common ones (`serve --max-calls`, 64 by default).

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use multipass_system_tests::bus::{call_helper_as, HelperSetup, RawCalls, RawReply};
use multipass_system_tests::users::subordinate_range;
use multipass_system_tests::{
    audit_events, collapsed_counts, mode_owner, procfs, read_until, DaemonConfig, User,
};

/// Users who hold calls, each with one process and one connection.
const ATTACKERS: usize = 4;
/// Interactive calls each of them makes at once.
const CALLS_EACH: usize = 4;
/// Interactive checks of one user in progress, at most.
const INTERACTIVE_PER_USER: usize = 2;
/// The helper's common places (`--max-calls`): the attackers' held calls fill them.
const MAX_CALLS: usize = ATTACKERS * INTERACTIVE_PER_USER;
/// The helper's deadline for polkit's answer (`--polkit-timeout`).
const POLKIT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after it a held call may still be answered.
const LATEST: Duration = Duration::from_secs(10);
/// A refusal "at once" comes well within this.
const AT_ONCE: Duration = Duration::from_secs(2);

/// The reply of one call of `member` by `user` on a connection of its own, without an agent and
/// without ALLOW_INTERACTIVE_AUTHORIZATION.
fn one_plain_call(user: &User, member: &str) -> Option<RawReply> {
    let mut call = RawCalls::start(user, member, 1, false, false, LATEST);
    call.send();
    call.read_until(Instant::now() + LATEST, |c| !c.replies.is_empty());
    call.replies.first().cloned()
}

fn describe(reply: &RawReply) -> String {
    format!(
        "{:.2?} {}",
        reply.after,
        reply.error.as_deref().unwrap_or("success")
    )
}

fn interactive_calls_polkit_never_answers_cannot_hold_the_helper() {
    let setup = HelperSetup::new();
    let attackers: Vec<User> = (0..ATTACKERS).map(|_| setup.user(&[])).collect();
    let fifth = setup.user(&[]);
    // The daemon runs as multipassd, which owns its data directory, as packaged.
    let (daemon, helper) = setup.serve_with_helper_args(
        DaemonConfig {
            verbosity: 1,
            extra_args: vec!["--user".into(), "multipassd".into()],
            ..DaemonConfig::default()
        },
        &[
            "--max-calls",
            &MAX_CALLS.to_string(),
            "--polkit-timeout",
            &POLKIT_TIMEOUT.as_secs().to_string(),
        ],
    );
    let multipassd = nix::unistd::User::from_name("multipassd")
        .expect("look up multipassd")
        .expect("the multipassd user");
    let daemon_ids = (multipassd.uid.as_raw(), multipassd.gid.as_raw());
    assert_eq!(
        std::fs::metadata(&daemon.data_dir)
            .expect("the data directory")
            .uid(),
        daemon_ids.0,
        "the daemon's data directory should be its user's"
    );
    let socket = daemon.socket.clone().expect("unix socket");
    let restricted = (0o660, 0, setup.admins.gid);
    let pid = helper.pid();
    let (rss_before, hwm_before) = (procfs::rss_kib(pid), procfs::peak_rss_kib(pid));
    let log_before = helper.log().lines().count();

    // Each attacker registers its agent, then, one after another, sends its interactive calls
    // and has the refusals it should have at once and polkitd ask its agent about the others. (A
    // call refused as one interactive call too many may take a common place for a moment: sent
    // all at once, the calls of some attackers could find them all taken.)
    let mut held: Vec<RawCalls> = std::thread::scope(|scope| {
        let started: Vec<_> = attackers
            .iter()
            .map(|user| {
                scope.spawn(move || {
                    RawCalls::start(user, "SetPassphrase", CALLS_EACH, true, true, 2 * LATEST)
                })
            })
            .collect();
        started
            .into_iter()
            .map(|s| s.join().expect("an attacker"))
            .collect()
    });
    for calls in &mut held {
        calls.send();
        calls.read_until(calls.sent + Duration::from_secs(1), |c| {
            c.replies.len() >= CALLS_EACH - INTERACTIVE_PER_USER
                && c.challenges() >= INTERACTIVE_PER_USER
        });
    }
    let unanswered_then: Vec<usize> = held.iter().map(|c| c.calls - c.replies.len()).collect();

    // While those are held: the common places are full, the daemon's user's and root's are not.
    let fifth_during = one_plain_call(&fifth, "SetPassphrase");
    let daemon_user = call_helper_as(Some(daemon_ids), "SetSocketAccess", "b", &["true"]);
    let mode_by_daemon_user = mode_owner(&socket).expect("the socket");
    let root = call_helper_as(None, "SetSocketAccess", "b", &["false"]);
    let mode_by_root = mode_owner(&socket).expect("the socket");
    let while_held = Instant::now();
    let held_by = held.iter().map(|c| c.sent).min().expect("attackers");

    // The deadline passes; the held calls are refused.
    for calls in &mut held {
        calls.read_until(calls.sent + LATEST, |c| c.replies.len() == c.calls);
    }
    let fifth_after = one_plain_call(&fifth, "SetPassphrase");

    // Each attacker's refusals by polkit (the cancelled checks) are audited collapsed.
    let log = read_until(
        Duration::from_secs(3),
        || helper.log(),
        |log| {
            attackers.iter().zip(&held).all(|(user, calls)| {
                let denied = denials_of(log, user.uid);
                collapsed_counts(&denied).0 as usize
                    >= calls
                        .replies
                        .iter()
                        .filter(|r| r.is_error("NotAuthorized"))
                        .count()
            })
        },
    );
    let (rss_after, hwm_after) = (procfs::rss_kib(pid), procfs::peak_rss_kib(pid));
    // The lines it writes as packaged (at `info`); the tests run it at `trace`, so that a
    // secret in any line would be seen.
    let new_lines: Vec<&str> = log
        .lines()
        .skip(log_before)
        .filter(|l| !l.contains(" TRACE ") && !l.contains(" DEBUG "))
        .collect();

    let mut report = String::new();
    for ((user, calls), unanswered) in attackers.iter().zip(&held).zip(&unanswered_then) {
        report.push_str(&format!(
            "\n  {} (uid {}): {} calls, {unanswered} unanswered when the others were made; \
             polkitd asked its agent to authenticate {} times ({} calls to it in all); \
             replies (time after sending): {}{}",
            user.name,
            user.uid,
            calls.calls,
            calls.challenges(),
            calls.asked.len(),
            calls
                .replies
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join("; "),
            if calls.replies.len() < calls.calls {
                format!("; {} never answered", calls.calls - calls.replies.len())
            } else {
                String::new()
            }
        ));
    }
    multipass_system_tests::figure(&format!(
        "interactive_calls_polkit_never_answers_cannot_hold_the_helper: {ATTACKERS} users with \
         a never-answering agent, {CALLS_EACH} interactive calls each, helper --max-calls \
         {MAX_CALLS} --polkit-timeout {}:{report}\n  while held ({:.2?} after the first calls): \
         a fifth user's plain call: {}; the daemon's user's SetSocketAccess(true): {daemon_user:?}, \
         socket {:o}; root's SetSocketAccess(false): {root:?}, socket {:o}\n  after: the fifth \
         user's call: {}\n  helper log: {} lines meanwhile; RSS {rss_before} -> {rss_after} KiB, \
         peak {hwm_before} -> {hwm_after} KiB",
        POLKIT_TIMEOUT.as_secs(),
        while_held - held_by,
        fifth_during
            .as_ref()
            .map_or("no reply".into(), describe),
        mode_by_daemon_user.0,
        mode_by_root.0,
        fifth_after.as_ref().map_or("no reply".into(), describe),
        new_lines.len(),
    ));

    for (user, calls) in attackers.iter().zip(&held) {
        let who = &user.name;
        assert_eq!(
            calls.replies.len(),
            calls.calls,
            "{who}: calls still unanswered {LATEST:?} after sending:{report}"
        );
        let (busy, refused): (Vec<&RawReply>, Vec<&RawReply>) =
            calls.replies.iter().partition(|r| r.is_error("Busy"));
        assert_eq!(
            busy.len(),
            CALLS_EACH - INTERACTIVE_PER_USER,
            "{who}: all but {INTERACTIVE_PER_USER} interactive calls should be refused as busy:\
             {report}"
        );
        assert!(
            busy.iter().all(|r| r.after < AT_ONCE),
            "{who}: a refusal as busy was not at once:{report}"
        );
        for reply in refused {
            assert!(
                reply.is_error("NotAuthorized")
                    && reply
                        .error
                        .as_deref()
                        .is_some_and(|e| e.contains("no answer from polkit")),
                "{who}: a held call should be refused for polkit's silence: {reply:?}{report}"
            );
            assert!(
                reply.after >= POLKIT_TIMEOUT - Duration::from_millis(500) && reply.after <= LATEST,
                "{who}: a held call was answered after {:.2?}, not at the deadline \
                 ({POLKIT_TIMEOUT:?}):{report}",
                reply.after
            );
            assert!(
                reply.at > while_held,
                "{who}: a held call was answered before the others were made:{report}"
            );
        }
        assert_eq!(
            calls.challenges(),
            INTERACTIVE_PER_USER,
            "{who}: polkitd should have asked its agent once per call it held:{report}"
        );
    }
    let fifth_during = fifth_during.expect("the fifth user's call while the others were held");
    assert!(
        fifth_during.is_error("Busy"),
        "with all {MAX_CALLS} common places held, a fifth user's call should be refused as \
         busy: {fifth_during:?}{report}"
    );
    assert!(
        daemon_user.0,
        "the daemon's user's call while the common places were held: {}",
        daemon_user.1
    );
    assert_eq!(
        mode_by_daemon_user,
        (0o666, 0, 0),
        "opened by the daemon's user"
    );
    assert!(
        root.0,
        "root's call while the common places were held: {}",
        root.1
    );
    assert_eq!(mode_by_root, restricted, "restricted by root");
    let fifth_after = fifth_after.expect("the fifth user's call after the deadline");
    assert!(
        fifth_after.is_error("InteractionRequired") || fifth_after.is_error("NotAuthorized"),
        "after the deadline a fifth user's call should reach polkit (and be refused there): \
         {fifth_after:?}"
    );

    for (user, calls) in attackers.iter().zip(&held) {
        let lines = denials_of(&log, user.uid);
        let (counted, _) = collapsed_counts(&lines);
        let refused = calls
            .replies
            .iter()
            .filter(|r| r.is_error("NotAuthorized"))
            .count();
        assert_eq!(
            counted as usize, refused,
            "{}: every refusal by polkit counted in exactly one helper-denied line:\n{log}",
            user.name
        );
        assert!(
            lines.len() <= INTERACTIVE_PER_USER,
            "{}: {} helper-denied lines:\n{log}",
            user.name,
            lines.len()
        );
    }
    assert!(
        new_lines.len() <= 16,
        "{} lines in the helper's log for this:\n{}",
        new_lines.len(),
        new_lines.join("\n")
    );
    let grown_mib = hwm_after.saturating_sub(hwm_before) >> 10;
    assert!(
        grown_mib < 8,
        "the helper's peak RSS grew by {grown_mib} MiB"
    );
}

/// The `helper-denied` lines of `uid`.
fn denials_of(log: &str, uid: u32) -> Vec<&str> {
    let uid = format!(" uid={uid} ");
    audit_events(log, "helper-denied")
        .into_iter()
        .filter(|l| l.contains(&uid))
        .collect()
}

/// A user's subordinate uids (`/etc/subuid`), each another user to the bus and to polkit, are
/// one caller to the helper's bounds: three of them, each with a never-answering agent and two
/// interactive calls, get two checks in progress between them, and the other four calls are
/// refused at once as busy. (Counted per uid, each had its two: six held places, and 32 such
/// uids held all 64.) The bus lets in only uids the user database knows, so the subordinate uids
/// here have entries, as a directory or nss-systemd may give them.
fn subordinate_uids_share_their_owners_bounds() {
    const UIDS: usize = 3;
    let setup = HelperSetup::new();
    let owner = setup.user(&[]);
    let first = subordinate_range(&owner.name);
    let subordinates: Vec<User> = (0..UIDS as u32)
        .map(|i| User::create_as_uid(&setup.dir, first + 7 + i))
        .collect();
    let (_daemon, _helper) = setup.serve_with_helper_args(
        DaemonConfig::default(),
        &["--polkit-timeout", &POLKIT_TIMEOUT.as_secs().to_string()],
    );
    let mut held: Vec<RawCalls> = subordinates
        .iter()
        .map(|user| {
            RawCalls::start(
                user,
                "SetPassphrase",
                INTERACTIVE_PER_USER,
                true,
                true,
                LATEST,
            )
        })
        .collect();
    for calls in &mut held {
        calls.send();
    }
    for calls in &mut held {
        calls.read_until(calls.sent + AT_ONCE, |c| {
            c.replies.len() + c.challenges() >= c.calls
        });
    }
    let report: String = held
        .iter()
        .map(|c| {
            format!(
                "\n  {}: polkitd asked its agent {} times; replies: {}",
                c.user,
                c.challenges(),
                c.replies
                    .iter()
                    .map(describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
        .collect();
    multipass_system_tests::figure(&format!(
        "subordinate_uids_share_their_owners_bounds: {UIDS} of {}'s subordinate uids, \
         {INTERACTIVE_PER_USER} interactive calls each:{report}",
        owner.name
    ));
    let challenges: usize = held.iter().map(RawCalls::challenges).sum();
    let busy = held
        .iter()
        .flat_map(|c| &c.replies)
        .filter(|r| r.is_error("Busy") && r.after < AT_ONCE)
        .count();
    assert_eq!(
        challenges, INTERACTIVE_PER_USER,
        "checks in progress for one user's uids:{report}"
    );
    assert_eq!(
        busy,
        UIDS * INTERACTIVE_PER_USER - INTERACTIVE_PER_USER,
        "calls refused at once as busy:{report}"
    );
}

multipass_system_tests::process_tests! {
    root: [interactive_calls_polkit_never_answers_cannot_hold_the_helper, subordinate_uids_share_their_owners_bounds],
}
