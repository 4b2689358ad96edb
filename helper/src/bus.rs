//! The D-Bus service `io.multipass.Helper1` (its names, errors and callers' proxy are in
//! `helper_api`). Each method asks polkit about the caller first
//! (the `system-bus-name` subject, which polkitd resolves itself, race-free), then calls one
//! function in [`crate::ops`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
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

/// The object served at [`OBJECT_PATH`].
pub struct Helper {
    config: Arc<Config>,
    activity: Arc<Activity>,
    denials: Denials,
}

impl Helper {
    /// A helper for `config`.
    pub fn new(config: Config) -> Helper {
        Helper {
            config: Arc::new(config),
            activity: Activity::new(),
            denials: denials(),
        }
    }

    /// Its activity record.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }
}

/// At most one `helper-denied` line per caller and action in this period.
const DENIAL_PERIOD: Duration = Duration::from_secs(1);

/// One denial, as its line tells it.
#[derive(Debug)]
struct Denied {
    action: &'static str,
    who: Who,
    sender: String,
    reason: String,
}

/// Denials collapsed per caller (by uid, so that new connections do not make new keys) and
/// action: the first is written at once, then at most one line a second with the number it
/// stands for. A user whom polkit denies can call as fast as polkitd answers (about 190 calls a
/// second here); without this each call was a line, and a flood could push the lines that
/// matter past the journal's rate limit.
type Denials = Collapse<(Option<u32>, &'static str), Denied>;

fn denials() -> Denials {
    Collapse::new(
        DENIAL_PERIOD,
        Arc::new(|denied: &Denied, refusals| {
            AuditEvent::HelperDenied {
                action: denied.action,
                who: denied.who,
                sender: &denied.sender,
                reason: &denied.reason,
                refusals,
            }
            .emit()
        }),
    )
}

/// Ask polkit whether the sender of the message with `header` may perform `action`. Interaction
/// (an authentication dialog or agent prompt) only if the caller flagged the message with
/// ALLOW_INTERACTIVE_AUTHORIZATION. Any error is a denial, audited through `denials`.
async fn authorize(
    connection: &Connection,
    header: &Header<'_>,
    action: &'static str,
    denials: &Denials,
) -> Result<(), HelperError> {
    let interactive = header
        .primary()
        .flags()
        .contains(Flags::AllowInteractiveAuth);
    let reason = match check_authorization(connection, header, action, interactive).await {
        Ok(Polkit::Yes) => return Ok(()),
        Ok(Polkit::NeedsInteraction) => {
            return Err(HelperError::InteractionRequired(format!(
                "{action} needs an administrator's authentication; call again allowing \
                 interactive authorization, with a polkit agent running (e.g. pkttyagent)"
            )))
        }
        Ok(Polkit::No) => "polkit said no".to_string(),
        Err(reason) => reason,
    };
    let uid = caller_uid(connection, header).await.ok();
    let denied = Denied {
        action,
        who: uid.map_or(Who::Unknown, Who::Uid),
        sender: header.sender().map(|s| s.to_string()).unwrap_or_default(),
        reason: reason.clone(),
    };
    denials.note((uid, action), denied);
    Err(HelperError::NotAuthorized(format!(
        "Not authorized to {action}: {reason}"
    )))
}

/// What polkit said.
enum Polkit {
    Yes,
    No,
    /// An administrator's authentication would do, but the caller did not allow interaction.
    NeedsInteraction,
}

/// polkit's answer for the sender of `header` and `action`; an error says why there is none.
async fn check_authorization(
    connection: &Connection,
    header: &Header<'_>,
    action: &str,
    interactive: bool,
) -> Result<Polkit, String> {
    let subject = Subject::new_for_message_header(header).map_err(|e| e.to_string())?;
    let authority = AuthorityProxy::new(connection)
        .await
        .map_err(|e| format!("cannot reach polkit ({e})"))?;
    let flags = if interactive {
        CheckAuthorizationFlags::AllowUserInteraction.into()
    } else {
        Default::default()
    };
    let result = authority
        .check_authorization(&subject, action, &HashMap::new(), flags, "")
        .await
        .map_err(|e| format!("polkit failed ({e})"))?;
    Ok(if result.is_authorized {
        Polkit::Yes
    } else if result.is_challenge && !interactive {
        Polkit::NeedsInteraction
    } else {
        Polkit::No
    })
}

async fn caller_uid(connection: &Connection, header: &Header<'_>) -> Result<u32, HelperError> {
    let sender = header
        .sender()
        .ok_or_else(|| HelperError::NotAuthorized("message without a sender".into()))?;
    let dbus = zbus::fdo::DBusProxy::new(connection).await?;
    dbus.get_connection_unix_user(sender.clone().into())
        .await
        .map_err(|e| HelperError::NotAuthorized(format!("cannot identify the caller: {e}")))
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
        authorize(connection, &header, actions::SET_PASSPHRASE, &self.denials).await?;
        ops::validate_passphrase(&passphrase)?;
        let uid = caller_uid(connection, &header).await.ok();
        let config = self.config.clone();
        let cleared = passphrase.is_empty();
        blocking(move || ops::set_passphrase(&config, passphrase)).await?;
        AuditEvent::PassphraseChanged {
            cleared,
            by: uid.map_or(Who::Unknown, Who::Uid),
            via: Via::Helper,
        }
        .emit();
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
        authorize(connection, &header, actions::TRUST_CLIENT, &self.denials).await?;
        let der = ops::validate_certificate(&pem)?;
        let uid = caller_uid(connection, &header).await?;
        let name = ops::client_name(&name, uid)?;
        let config = self.config.clone();
        let who = Requester { uid, name };
        let fingerprint = blocking(move || ops::trust_certificate(&config, &der, &who)).await?;
        crate::trusted(uid, &fingerprint, Via::Helper);
        Ok(fingerprint)
    }

    /// Open (root:root 0666) or restrict (root:<admin group> 0660) the daemon's socket.
    async fn set_socket_access(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        open: bool,
    ) -> Result<(), HelperError> {
        let _call = self.activity.begin();
        authorize(connection, &header, actions::MANAGE_SOCKET, &self.denials).await?;
        let access = if open {
            trust::access::Access::Open
        } else {
            trust::access::Access::Restricted
        };
        let config = self.config.clone();
        blocking(move || ops::set_socket_access(&config, access)).await?;
        let by = caller_uid(connection, &header)
            .await
            .map_or(Who::Unknown, Who::Uid);
        AuditEvent::SocketAccess {
            access: if open { "open" } else { "restricted" },
            by,
        }
        .emit();
        Ok(())
    }
}

/// Serve on the system bus until idle for `idle` (or forever with `None`).
pub async fn serve(config: Config, idle: Option<Duration>) -> anyhow::Result<()> {
    let helper = Helper::new(config);
    let activity = helper.activity();
    // Serve the object before taking the name, so a call that activated us finds it.
    let connection = zbus::connection::Builder::system()?
        .serve_at(OBJECT_PATH, helper)?
        .name(BUS_NAME)?
        .build()
        .await?;
    tracing::info!(name = BUS_NAME, "serving");
    let Some(idle) = idle else {
        std::future::pending::<()>().await;
        return Ok(());
    };
    loop {
        tokio::time::sleep(idle / 4).await;
        if activity.idle_for().is_some_and(|d| d >= idle) {
            break;
        }
    }
    // Give the name back first: new callers then activate a fresh helper instead of queueing on
    // one that is leaving.
    let _ = connection.release_name(BUS_NAME).await;
    while activity.idle_for().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!("idle; exiting");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::object_server::Interface;

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
        let scratch = std::env::temp_dir().join("multipassd-helper-p2p-nonexistent");
        let helper = Helper::new(Config {
            socket: scratch.join("socket"),
            data_dir: scratch.clone(),
            admin_group: None,
        });
        let server = zbus::connection::Builder::unix_stream(server_end)
            .server(zbus::Guid::generate())
            .unwrap()
            .p2p()
            .serve_at(OBJECT_PATH, helper)
            .unwrap()
            .build();
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
        refused(
            "TrustCertificate",
            proxy.trust_certificate("pem", "name").await.map(|_| ()),
        );
        refused("SetSocketAccess", proxy.set_socket_access(true).await);
        assert!(!scratch.exists(), "a refused call touched the file system");
    }
}
