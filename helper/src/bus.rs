//! The D-Bus service `io.multipass.Helper1` (its names, errors and callers' proxy are in
//! `helper_api`). Each method checks its input, admits its caller within the bounds on calls in
//! flight, asks polkit about the caller (the `system-bus-name` subject, which polkitd resolves
//! itself, race-free), then calls one function in [`crate::ops`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trust::audit::{AuditEvent, Via, Who};
use trust::collapse::Collapse;
use zbus::message::{Flags, Header};
use zbus::{interface, Connection};
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};
use zeroize::Zeroizing;

use helper_api::{actions, HelperError, BUS_NAME, OBJECT_PATH};

use crate::config::Config;
use crate::ops::{self, Requester};

/// Calls in flight and the time of the last one, for the idle exit.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn begin(self: &Arc<Self>) -> CallGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        CallGuard(self.clone())
    }

    /// How long since the last call ended, if none is in flight.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::SeqCst));
        Some(self.start.elapsed().saturating_sub(last))
    }
}

struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let now = self.0.start.elapsed().as_millis() as u64;
        self.0.last_ms.store(now, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bounds of a serving helper that tests may change.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Calls answered at once, at most, beside those of root and the state directory's owner.
    pub calls: usize,
    /// How long polkit may take over a check that may ask someone to authenticate.
    pub interaction: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            calls: CALLS,
            interaction: POLKIT_INTERACTION,
        }
    }
}

/// The object served at [`OBJECT_PATH`].
pub struct Helper {
    config: Arc<Config>,
    limits: Limits,
    activity: Arc<Activity>,
    callers: Callers,
    writers: tokio::sync::Semaphore,
    denials: Denials,
    bus: tokio::sync::OnceCell<zbus::fdo::DBusProxy<'static>>,
    authority: tokio::sync::OnceCell<AuthorityProxy<'static>>,
}

impl Helper {
    /// A helper for `config`, within `limits`.
    pub fn new(config: Config, limits: Limits) -> Helper {
        Helper {
            config: Arc::new(config),
            limits,
            activity: Activity::new(),
            callers: Callers::new(limits.calls),
            writers: tokio::sync::Semaphore::new(WRITERS),
            denials: denials(),
            bus: tokio::sync::OnceCell::new(),
            authority: tokio::sync::OnceCell::new(),
        }
    }

    /// `connection`, a peer-to-peer server serving a helper whose paths are in `scratch` (under
    /// the temporary directory), which must not exist: for tests whose calls are all refused
    /// before any work, as messages carry no sender without a bus.
    #[cfg(test)]
    pub(crate) fn served_nowhere(
        connection: zbus::connection::Builder<'static>,
        scratch: &str,
    ) -> (zbus::connection::Builder<'static>, std::path::PathBuf) {
        let scratch = std::env::temp_dir().join(scratch);
        let helper = Helper::new(
            Config {
                socket: scratch.join("socket"),
                data_dir: scratch.clone(),
                admin_group: None,
            },
            Limits::default(),
        );
        let connection = connection
            .server(zbus::Guid::generate())
            .unwrap()
            .p2p()
            .serve_at(OBJECT_PATH, helper)
            .unwrap();
        (connection, scratch)
    }

    /// Its activity record.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// The caller of the message with `header`, by the uid the bus knows for its connection,
    /// admitted if fewer than [`CALLS`] calls are being answered and it has fewer than
    /// [`CALLS_PER_CALLER`] of them. Root and the state directory's owner (the daemon, which
    /// asks for the socket's access) also have [`RESERVED_CALLS`] places nobody else can take.
    async fn admit(
        &self,
        connection: &Connection,
        header: &Header<'_>,
    ) -> Result<Admitted<'_>, HelperError> {
        // Before anything that waits: a call refused here costs no more than its message.
        let slot = self.callers.slot()?;
        let uid = self.caller_uid(connection, header).await?;
        if slot.reserved && uid != 0 && Some(uid) != self.owner() {
            return Err(self.callers.full());
        }
        self.callers.admit(uid, slot)
    }

    /// The uid that owns the state directory.
    fn owner(&self) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&self.config.data_dir)
            .ok()
            .map(|meta| meta.uid())
    }

    /// The uid the bus knows for the sender of the message with `header`.
    async fn caller_uid(
        &self,
        connection: &Connection,
        header: &Header<'_>,
    ) -> Result<u32, HelperError> {
        let sender = header.sender().ok_or_else(|| {
            HelperError::NotAuthorized("Not authorized: a call without a sender".into())
        })?;
        let ask = async {
            let bus = self
                .bus
                .get_or_try_init(|| zbus::fdo::DBusProxy::new(connection))
                .await?;
            bus.get_connection_unix_user(sender.clone().into()).await
        };
        // Bounded: a bus whose queue towards us is full drops its own replies (a flood of
        // large calls), and a call waiting for ever would keep its place for ever.
        match tokio::time::timeout(BUS_ANSWER, ask).await {
            Ok(answer) => answer.map_err(|e| {
                HelperError::NotAuthorized(format!(
                    "Not authorized: cannot identify the caller ({e})"
                ))
            }),
            Err(_) => Err(HelperError::Busy(format!(
                "the bus did not say who the caller is within {} s; please try again",
                BUS_ANSWER.as_secs()
            ))),
        }
    }

    /// Ask polkit whether the sender of the message with `header` (`uid`) may perform `action`.
    /// Interaction (an authentication dialog or agent prompt) only if the caller flagged the
    /// message with ALLOW_INTERACTIVE_AUTHORIZATION. Any error is a denial, audited collapsed.
    async fn authorize(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        action: &'static str,
        uid: u32,
    ) -> Result<(), HelperError> {
        let interactive = header
            .primary()
            .flags()
            .contains(Flags::AllowInteractiveAuth);
        // Asked without interaction first: polkit answers that at once, and most callers (root,
        // the daemon, operators its rules authorize) need nothing more. Only a caller who must
        // authenticate is asked again with interaction, which may wait for someone to answer a
        // prompt, or for an agent that never answers: a few such checks per caller, so that
        // nobody can hold the helper's places that way.
        let mut answer = self
            .check_authorization(connection, header, action, false)
            .await;
        let _prompt;
        if interactive && matches!(answer, Ok(Polkit::NeedsInteraction)) {
            _prompt = (uid != 0).then(|| self.callers.prompt(uid)).transpose()?;
            answer = self
                .check_authorization(connection, header, action, true)
                .await;
        }
        let reason = match answer {
            Ok(Polkit::Yes) => return Ok(()),
            Ok(Polkit::NeedsInteraction) => {
                return Err(HelperError::InteractionRequired(format!(
                    "{action} needs an administrator's authentication; call again allowing \
                     interactive authorization, with a polkit agent running (e.g. pkttyagent)"
                )))
            }
            Ok(Polkit::No) => "polkit does not allow it to this user".to_string(),
            Ok(Polkit::NotAuthenticated { dismissed: true }) => {
                "the administrator's authentication was cancelled".to_string()
            }
            Ok(Polkit::NotAuthenticated { dismissed: false }) => {
                "no administrator's authentication was given (a wrong password, or no polkit \
                 agent could ask for one)"
                    .to_string()
            }
            Err(reason) => reason,
        };
        let denied = Denied {
            action,
            uid,
            sender: header.sender().map(|s| s.to_string()).unwrap_or_default(),
            reason: reason.clone(),
        };
        // Keyed by account: a user's subordinate uids share its line a second.
        self.denials
            .note(((self.callers.account)(uid), action), denied);
        Err(HelperError::NotAuthorized(format!(
            "Not authorized to {action}: {reason}"
        )))
    }

    /// polkit's answer for the sender of `header` and `action`; an error says why there is none.
    async fn check_authorization(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        action: &str,
        interactive: bool,
    ) -> Result<Polkit, String> {
        let subject = Subject::new_for_message_header(header).map_err(|e| e.to_string())?;
        let authority = self
            .authority
            .get_or_try_init(|| AuthorityProxy::new(connection))
            .await
            .map_err(|e| format!("cannot reach polkit ({e})"))?;
        let (flags, deadline) = if interactive {
            (
                CheckAuthorizationFlags::AllowUserInteraction.into(),
                self.limits.interaction,
            )
        } else {
            (Default::default(), POLKIT_ANSWER)
        };
        static CHECKS: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "multipassd-helper-{}",
            CHECKS.fetch_add(1, Ordering::Relaxed)
        );
        let details = HashMap::new();
        let check = authority.check_authorization(&subject, action, &details, flags, &id);
        let result = match tokio::time::timeout(deadline, check).await {
            Ok(result) => result.map_err(|e| format!("polkit failed ({e})"))?,
            Err(_) => {
                // polkitd would otherwise keep asking the caller's agent.
                let cancel = authority.cancel_check_authorization(&id);
                let _ = tokio::time::timeout(BUS_ANSWER, cancel).await;
                return Err(format!(
                    "no answer from polkit within {} s",
                    deadline.as_secs()
                ));
            }
        };
        Ok(if result.is_authorized {
            Polkit::Yes
        } else if result.is_challenge && !interactive {
            Polkit::NeedsInteraction
        } else if interactive {
            // Asked with interaction only after a challenge: an administrator's authentication
            // would have done, and none came.
            Polkit::NotAuthenticated {
                dismissed: result.details.contains_key("polkit.dismissed"),
            }
        } else {
            Polkit::No
        })
    }

    /// Run `write` (which starts a writer process) once fewer than [`WRITERS`] are running.
    async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HelperError> {
        let _turn = self
            .writers
            .acquire()
            .await
            .map_err(|_| HelperError::Failed("internal error".into()))?;
        blocking(write).await
    }
}

/// Calls answered at once, at most. Beyond that a call is refused as soon as its message is
/// read, before it waits for anything: the system bus lets one user keep thousands of calls
/// waiting (256 connections with 128 each), and each held a task and its message here (2,048
/// at once took 15 MiB).
const CALLS: usize = 64;

/// Places beyond [`CALLS`] for root and the state directory's owner only: whatever others hold,
/// the daemon can still have the socket's access set, and root can still act.
const RESERVED_CALLS: usize = 8;

/// Writer processes (`ops`' writes as the state directory's owner) running at once, at most;
/// the calls beyond wait their turn. Each passphrase is hashed in one, and Argon2id takes 19 MiB
/// and a core: without this bound one operator's 16 calls in flight ran 16 writers holding
/// 428 MiB between them, and all callers' 64 could run 64. Two keep a small host's cores busy,
/// and the writes themselves take the files' locks one at a time anyway.
const WRITERS: usize = 2;

/// Calls one caller (by uid; root excepted) may have among those: room for an administrator's
/// script that trusts several clients at once (the tests make 10), while a caller who floods
/// takes no more than a quarter of the places from the others.
const CALLS_PER_CALLER: usize = 16;

/// Checks that may ask someone to authenticate, in progress per caller (root excepted). Each
/// holds its call's place until polkit answers, which an agent that never answers delays until
/// [`POLKIT_INTERACTION`]: without this bound, four users held all [`CALLS`] places that way.
const PROMPTS_PER_CALLER: usize = 2;

/// Checks that may ask someone to authenticate, in progress in all (root's aside): half of the
/// [`CALLS`]. Without it, 32 users, each with an agent that never answers and its
/// [`PROMPTS_PER_CALLER`], held every ordinary place for [`POLKIT_INTERACTION`]; with it, calls
/// that need no prompt (an operator's that polkit's rules authorize) keep the other half.
const PROMPTS: usize = CALLS / 2;

/// How long polkit may take over a check that may ask someone to authenticate: time to type a
/// password at an agent's prompt. Then the check is cancelled and the call refused.
const POLKIT_INTERACTION: Duration = Duration::from_secs(120);

/// How long polkit may take over any other check, which it answers at once: the default
/// timeout of a D-Bus call.
const POLKIT_ANSWER: Duration = Duration::from_secs(25);
/// How long the bus itself is waited for (who a caller is; a check's cancellation).
const BUS_ANSWER: Duration = Duration::from_secs(5);

/// Calls being answered, and per caller.
#[derive(Debug)]
struct Callers {
    slots: Arc<tokio::sync::Semaphore>,
    reserved: Arc<tokio::sync::Semaphore>,
    calls: usize,
    /// The uid a caller is counted as: a subordinate uid (`/etc/subuid`) as its owner, so that a
    /// user who runs processes as its 65,536 subordinate uids (each another user to the bus and
    /// the kernel) is one caller, not thousands, to the bounds per caller.
    account: fn(u32) -> u32,
    per_uid: Mutex<HashMap<u32, usize>>,
    prompts: Mutex<HashMap<u32, usize>>,
}

/// One of the places of [`Callers`].
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// One of the [`RESERVED_CALLS`].
    reserved: bool,
}

/// A call admitted by [`Callers::admit`], counted until dropped.
struct Admitted<'a> {
    callers: &'a Callers,
    /// The caller's uid.
    uid: u32,
    /// The uid it is counted as.
    account: u32,
    _slot: Slot,
}

/// A check that may prompt, counted by [`Callers::prompt`] until dropped.
struct Prompt<'a> {
    callers: &'a Callers,
    account: u32,
}

impl Callers {
    fn new(calls: usize) -> Callers {
        Callers {
            slots: Arc::new(tokio::sync::Semaphore::new(calls)),
            reserved: Arc::new(tokio::sync::Semaphore::new(RESERVED_CALLS)),
            calls,
            account: trust::subids::account,
            per_uid: Mutex::new(HashMap::new()),
            prompts: Mutex::new(HashMap::new()),
        }
    }

    /// What a caller is told when every place it may take is taken.
    fn full(&self) -> HelperError {
        HelperError::Busy(format!(
            "Too many calls in flight: the helper is answering {} calls; try again once it has",
            self.calls
        ))
    }

    /// One of the places: of the [`CALLS`], or else of the [`RESERVED_CALLS`], which the caller
    /// may keep only if it is root or the state directory's owner.
    fn slot(&self) -> Result<Slot, HelperError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot {
                _permit: permit,
                reserved: false,
            });
        }
        match self.reserved.clone().try_acquire_owned() {
            Ok(permit) => Ok(Slot {
                _permit: permit,
                reserved: true,
            }),
            Err(_) => Err(self.full()),
        }
    }

    /// `uid`'s call, in `slot`, unless its account has [`CALLS_PER_CALLER`] in flight.
    fn admit(&self, uid: u32, slot: Slot) -> Result<Admitted<'_>, HelperError> {
        let account = (self.account)(uid);
        let mut per_uid = self.per_uid.lock().unwrap_or_else(|e| e.into_inner());
        let calls = per_uid.entry(account).or_insert(0);
        if *calls >= CALLS_PER_CALLER && account != 0 {
            return Err(HelperError::Busy(format!(
                "Too many calls in flight: {CALLS_PER_CALLER} of this user's calls are still \
                 being answered; try again once they are"
            )));
        }
        *calls += 1;
        Ok(Admitted {
            callers: self,
            uid,
            account,
            _slot: slot,
        })
    }

    /// A check of `uid`'s that may prompt, unless its account has [`PROMPTS_PER_CALLER`] in
    /// progress.
    fn prompt(&self, uid: u32) -> Result<Prompt<'_>, HelperError> {
        let account = (self.account)(uid);
        let mut prompts = self.prompts.lock().unwrap_or_else(|e| e.into_inner());
        if prompts.values().sum::<usize>() >= PROMPTS {
            return Err(HelperError::Busy(format!(
                "{PROMPTS} calls are waiting for an authentication to be answered; try again \
                 once they are"
            )));
        }
        let count = prompts.entry(account).or_insert(0);
        if *count >= PROMPTS_PER_CALLER {
            return Err(HelperError::Busy(format!(
                "{PROMPTS_PER_CALLER} of this user's calls are waiting for an authentication \
                 to be answered; answer them first"
            )));
        }
        *count += 1;
        Ok(Prompt {
            callers: self,
            account,
        })
    }
}

/// Take one off `uid`'s count in `counts`, forgetting it at zero.
fn uncount(counts: &Mutex<HashMap<u32, usize>>, uid: u32) {
    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(count) = counts.get_mut(&uid) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&uid);
        }
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        uncount(&self.callers.per_uid, self.account);
    }
}

impl Drop for Prompt<'_> {
    fn drop(&mut self) {
        uncount(&self.callers.prompts, self.account);
    }
}

/// At most one `helper-denied` line per caller and action in this period.
const DENIAL_PERIOD: Duration = Duration::from_secs(1);

/// One denial, as its line tells it.
#[derive(Debug)]
struct Denied {
    action: &'static str,
    uid: u32,
    sender: String,
    reason: String,
}

/// Denials collapsed per caller (by uid counted as its account, so that neither new connections
/// nor a user's subordinate uids make new keys; the line names the latest denial's uid) and
/// action: the first is written at once, then at most one line a second with the number it
/// stands for. A user whom polkit denies can call as fast as polkitd answers (about 190 calls a
/// second here); without this each call was a line, and a flood could push the lines that
/// matter past the journal's rate limit.
type Denials = Collapse<(u32, &'static str), Denied>;

fn denials() -> Denials {
    Collapse::new(
        DENIAL_PERIOD,
        Arc::new(|denied: &Denied, refusals| {
            AuditEvent::HelperDenied {
                action: denied.action,
                who: Who::Uid(denied.uid),
                sender: &denied.sender,
                reason: &denied.reason,
                refusals,
            }
            .emit()
        }),
    )
}

/// What polkit said.
enum Polkit {
    Yes,
    No,
    /// Asked with interaction, no administrator's authentication came: `dismissed` when the
    /// user cancelled it (polkit's `polkit.dismissed` detail).
    NotAuthenticated {
        dismissed: bool,
    },
    /// An administrator's authentication would do, but the caller did not allow interaction.
    NeedsInteraction,
}

/// Run blocking `work` (file writes, hashing) off the D-Bus executor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, HelperError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| HelperError::Failed("internal error".into()))?
        .map_err(|e| HelperError::Failed(format!("{e:#}")))
}

// The macro takes a literal; `interface_name_is_the_api_s` checks it against `helper_api`.
//
// Each method checks its input first (cheap, bounded, and it frees a message that may be as
// large as the bus allows), then admits its caller, then asks polkit, then works.
#[interface(name = "io.multipass.Helper1")]
impl Helper {
    /// Set the passphrase clients authenticate with; an empty one clears it.
    async fn set_passphrase(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        passphrase: String,
    ) -> Result<(), HelperError> {
        let _call = self.activity.begin();
        let passphrase = Zeroizing::new(passphrase);
        ops::validate_passphrase(&passphrase)?;
        let caller = self.admit(connection, &header).await?;
        self.authorize(connection, &header, actions::SET_PASSPHRASE, caller.uid)
            .await?;
        let config = self.config.clone();
        let cleared = passphrase.is_empty();
        let changed = self
            .write(move || ops::set_passphrase(&config, passphrase))
            .await?;
        if changed {
            AuditEvent::PassphraseChanged {
                cleared,
                by: Who::Uid(caller.uid),
                via: Via::Helper,
            }
            .emit();
        }
        Ok(())
    }

    /// Trust a client certificate (one PEM block); returns its SHA-256 fingerprint. `name`
    /// defaults to the caller's login name.
    async fn trust_certificate(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        pem: String,
        name: String,
    ) -> Result<String, HelperError> {
        let _call = self.activity.begin();
        let der = ops::validate_certificate(&pem)?;
        drop(pem);
        let name = ops::requested_name(&name)?;
        let caller = self.admit(connection, &header).await?;
        self.authorize(connection, &header, actions::TRUST_CLIENT, caller.uid)
            .await?;
        let uid = caller.uid;
        let name = name.unwrap_or_else(|| trust::names::default_for_uid(uid));
        let config = self.config.clone();
        let who = Requester { uid, name };
        let trusted = self
            .write(move || ops::trust_certificate(&config, &der, &who))
            .await?;
        if trusted.added {
            crate::trusted(uid, &trusted.fingerprint, Via::Helper);
        }
        Ok(trusted.fingerprint)
    }

    /// Open (root:root 0666) or restrict (root:<admin group> 0660) the daemon's socket.
    async fn set_socket_access(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        open: bool,
    ) -> Result<(), HelperError> {
        let _call = self.activity.begin();
        let caller = self.admit(connection, &header).await?;
        self.authorize(connection, &header, actions::MANAGE_SOCKET, caller.uid)
            .await?;
        let access = if open {
            trust::access::Access::Open
        } else {
            trust::access::Access::Restricted
        };
        let config = self.config.clone();
        blocking(move || ops::set_socket_access(&config, access)).await?;
        AuditEvent::SocketAccess {
            access: if open { "open" } else { "restricted" },
            by: Who::Uid(caller.uid),
        }
        .emit();
        Ok(())
    }
}

/// The file this process was started from, to notice when a package upgrade replaces it: a
/// helper that went on serving would do so, as root, from the old program, for as long as
/// calls keep coming.
struct OwnProgram {
    path: std::path::PathBuf,
    /// Device and inode of the program running (through /proc, which reaches it even once
    /// its file is gone).
    running: Option<(u64, u64)>,
}

impl OwnProgram {
    fn find() -> OwnProgram {
        use std::os::unix::fs::MetadataExt;
        let running = std::fs::metadata("/proc/self/exe")
            .ok()
            .map(|m| (m.dev(), m.ino()));
        OwnProgram {
            path: std::env::current_exe().unwrap_or_default(),
            running,
        }
    }

    /// Whether the file it was started from is now another one, or gone.
    fn replaced(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(running) = self.running else {
            return false;
        };
        match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != running,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

/// How often a serving helper looks whether its program was replaced.
const REPLACED_CHECK: Duration = Duration::from_secs(1);
/// How long without a call before a helper whose program was replaced leaves: calls that come
/// back to back are served by the one running.
const REPLACED_QUIET: Duration = Duration::from_secs(1);
/// After giving its name back, how long a leaving helper goes on taking the calls the bus had
/// already routed to it.
const LEAVING_DRAIN: Duration = Duration::from_millis(250);
/// How long a helper told to stop (SIGTERM, SIGINT) waits for the calls in flight.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Serve on the system bus until idle for `idle` (or forever with `None`), until the program
/// has been replaced (a package upgrade) and no call came for a second (D-Bus then starts the
/// new one for the next call), or until SIGTERM or SIGINT. Calls in flight are finished first:
/// under systemd, giving the name back makes systemd stop the unit (`Type=dbus`), with SIGTERM.
pub async fn serve(config: Config, limits: Limits, idle: Option<Duration>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tokio::signal::unix::{signal, SignalKind};
    config.admin().announce();
    let program = OwnProgram::find();
    let helper = Helper::new(config, limits);
    let activity = helper.activity();
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    // Serve the object before taking the name, so a call that activated us finds it.
    let connection = crate::bus_socket::system()
        .await?
        .serve_at(OBJECT_PATH, helper)?
        .name(BUS_NAME)?
        .build()
        .await?;
    tracing::info!(name = BUS_NAME, "serving");
    let tick = idle.map_or(REPLACED_CHECK, |idle| (idle / 4).min(REPLACED_CHECK));
    let mut stopped = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = term.recv() => stopped = true,
            _ = int.recv() => stopped = true,
        }
        if stopped {
            tracing::info!("told to stop; finishing the calls in flight");
            break;
        }
        let Some(idle_for) = activity.idle_for() else {
            continue;
        };
        if idle.is_some_and(|idle| idle_for >= idle) {
            tracing::info!("idle; exiting");
            break;
        }
        if idle_for >= REPLACED_QUIET && program.replaced() {
            tracing::info!(
                program = %program.path.display(),
                "the helper's program was replaced (a package upgrade?); exiting, so that the \
                 next call starts the new one"
            );
            break;
        }
    }
    // Give the name back first: new callers then activate a fresh helper instead of queueing on
    // one that is leaving. What the bus routed to us before that is still served.
    let _ = connection.release_name(BUS_NAME).await;
    tokio::time::sleep(LEAVING_DRAIN).await;
    let drained = async {
        while activity.idle_for().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // A stop (ours, or systemd's after the name went) waits for the calls in flight, but not
    // for ever; a second signal is the same stop.
    tokio::select! {
        _ = drained => {}
        _ = async {
            if !stopped {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            tokio::time::sleep(STOP_GRACE).await;
        } => {
            tracing::warn!("calls still in flight {STOP_GRACE:?} after the stop; exiting anyway");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::object_server::Interface;

    #[test]
    fn calls_in_flight_are_bounded_in_all_and_per_caller() {
        let callers = Callers::new(CALLS);
        let admit = |uid| callers.slot().and_then(|slot| callers.admit(uid, slot));
        let busy = |what: &str, result: Result<Admitted<'_>, HelperError>| match result {
            Err(HelperError::Busy(why)) => assert!(why.contains("in flight"), "{what}: {why}"),
            other => panic!("{what}: {:?}", other.map(|_| ())),
        };
        let held: Vec<_> = (0..CALLS_PER_CALLER)
            .map(|_| admit(1000).expect("within the bound"))
            .collect();
        busy("beyond a caller's bound", admit(1000));
        // Another user, and root, are not held up.
        let _other = admit(1001).expect("another caller");
        let root: Vec<_> = (0..=CALLS_PER_CALLER)
            .map(|_| admit(0).expect("root"))
            .collect();
        drop(held);
        let _again = admit(1000).expect("once its calls were answered");
        assert_eq!(callers.per_uid.lock().unwrap().get(&1000), Some(&1));
        // However many callers, no more than CALLS at once, root's included; then only the
        // reserved places, which `Helper::admit` leaves to root and the directory's owner.
        let many: Vec<_> = (2000..)
            .map_while(|uid| {
                let slot = callers.slot().ok().filter(|slot| !slot.reserved)?;
                callers.admit(uid, slot).ok()
            })
            .collect();
        assert_eq!(many.len() + root.len() + 2, CALLS);
        let reserved: Vec<_> = (0..RESERVED_CALLS)
            .map(|_| callers.slot().expect("a reserved place"))
            .collect();
        assert!(reserved.iter().all(|slot| slot.reserved));
        busy("beyond the helper's bound", admit(0));
        drop(reserved);
        assert!(callers.slot().unwrap().reserved);
        drop(many);
        let after = callers.slot().expect("once calls were answered");
        assert!(!after.reserved, "the common places are taken first");
    }

    #[test]
    fn checks_that_may_prompt_are_bounded_per_caller() {
        let callers = Callers::new(CALLS);
        let held: Vec<_> = (0..PROMPTS_PER_CALLER)
            .map(|_| callers.prompt(1000).expect("within the bound"))
            .collect();
        match callers.prompt(1000) {
            Err(HelperError::Busy(why)) => assert!(why.contains("answer them first"), "{why}"),
            other => panic!("beyond the bound: {:?}", other.map(|_| ())),
        }
        let _other = callers.prompt(1001).expect("another caller");
        drop(held);
        let _again = callers.prompt(1000).expect("once answered");
        assert_eq!(callers.prompts.lock().unwrap().get(&1000), Some(&1));
    }

    /// However many callers, no more than [`PROMPTS`] checks that may prompt at once.
    #[test]
    fn checks_that_may_prompt_are_bounded_in_all() {
        let callers = Callers::new(CALLS);
        let held: Vec<_> = (2000..)
            .map_while(|uid| callers.prompt(uid).ok())
            .take(PROMPTS + 1)
            .collect();
        assert_eq!(held.len(), PROMPTS);
        match callers.prompt(1000) {
            Err(HelperError::Busy(why)) => assert!(why.contains("try again"), "{why}"),
            other => panic!("beyond the bound: {:?}", other.map(|_| ())),
        }
        drop(held);
        let _again = callers.prompt(1000).expect("once answered");
    }

    /// A user's subordinate uids share its bounds: here 100,000 and up are 1000's.
    #[test]
    fn subordinate_uids_count_as_their_owner() {
        let mut callers = Callers::new(CALLS);
        callers.account = |uid| if uid >= 100_000 { 1000 } else { uid };
        let admit = |uid| callers.slot().and_then(|slot| callers.admit(uid, slot));
        let held: Vec<_> = (0..CALLS_PER_CALLER as u32)
            .map(|i| admit(100_000 + i).expect("within the owner's bound"))
            .collect();
        assert!(
            admit(1000).is_err(),
            "the owner's bound is taken by its uids"
        );
        assert!(admit(100_500).is_err(), "another of its uids");
        assert_eq!(held[1].uid, 100_001, "the caller is still its own uid");
        let _other = admit(1001).expect("another user");
        let prompts: Vec<_> = (0..PROMPTS_PER_CALLER as u32)
            .map(|i| {
                callers
                    .prompt(100_000 + i)
                    .expect("within the owner's bound")
            })
            .collect();
        assert!(
            callers.prompt(1000).is_err(),
            "the owner's prompts are taken"
        );
        drop((held, prompts));
        assert!(callers.per_uid.lock().unwrap().get(&1000).is_none());
        let _again = admit(100_500).expect("once answered");
    }

    #[test]
    fn interface_name_is_the_api_s() {
        assert_eq!(Helper::name().as_str(), helper_api::INTERFACE);
    }

    /// The served interface and the callers' proxy agree on path, methods, signatures and error
    /// names: every call arrives (no UnknownMethod or signature error) and comes back as the
    /// typed error the helper sent. Over a peer-to-peer connection, messages carry no sender,
    /// so polkit's subject cannot be built and every call is refused before any work.
    #[tokio::test]
    async fn the_proxy_reaches_every_method_and_reads_its_errors() {
        let (server_end, client_end) = tokio::net::UnixStream::pair().unwrap();
        let (server, scratch) = Helper::served_nowhere(
            zbus::connection::Builder::unix_stream(server_end),
            "multipassd-helper-p2p-nonexistent",
        );
        let server = server.build();
        let client = zbus::connection::Builder::unix_stream(client_end)
            .p2p()
            .build();
        let (_server, client) = tokio::try_join!(server, client).unwrap();
        let proxy = helper_api::proxy(&client).await.unwrap();

        let refused = |what: &str, result: Result<(), HelperError>| match result {
            Err(HelperError::NotAuthorized(why)) => {
                assert!(why.contains("Not authorized"), "{what}: {why}")
            }
            other => panic!("{what}: {other:?}"),
        };
        refused("SetPassphrase", proxy.set_passphrase("a passphrase").await);
        // Input is checked before anything else.
        match proxy.trust_certificate("pem", "name").await {
            Err(HelperError::InvalidInput(why)) => assert!(why.contains("PEM"), "{why}"),
            other => panic!("TrustCertificate of no certificate: {other:?}"),
        }
        refused("SetSocketAccess", proxy.set_socket_access(true).await);
        assert!(!scratch.exists(), "a refused call touched the file system");
    }
}
