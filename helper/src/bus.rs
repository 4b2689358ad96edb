//! The D-Bus service `io.multipass.Helper1`. Each method asks polkit about the caller first
//! (the `system-bus-name` subject, which polkitd resolves itself, race-free), then calls one
//! function in [`crate::ops`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trust::audit::{AuditEvent, Via, Who};
use zbus::message::{Flags, Header};
use zbus::{interface, Connection};
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::HelperError;
use crate::ops::{self, Requester};

/// The bus name.
pub const BUS_NAME: &str = "io.multipass.Helper1";
/// The object path.
pub const OBJECT_PATH: &str = "/io/multipass/Helper1";

/// polkit actions, one per method.
pub mod actions {
    /// `SetPassphrase`.
    pub const SET_PASSPHRASE: &str = "io.multipass.set-passphrase";
    /// `TrustCertificate`.
    pub const TRUST_CLIENT: &str = "io.multipass.trust-client";
    /// `SetSocketAccess`.
    pub const MANAGE_SOCKET: &str = "io.multipass.manage-socket";
}

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
}

impl Helper {
    /// A helper for `config`.
    pub fn new(config: Config) -> Helper {
        Helper {
            config: Arc::new(config),
            activity: Activity::new(),
        }
    }

    /// Its activity record.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }
}

/// Ask polkit whether the sender of the message with `header` may perform `action`. Interaction
/// (an authentication dialog or agent prompt) only if the caller flagged the message with
/// ALLOW_INTERACTIVE_AUTHORIZATION. Any error is a denial.
async fn authorize(
    connection: &Connection,
    header: &Header<'_>,
    action: &str,
) -> Result<(), HelperError> {
    let denied = |why: String| {
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        AuditEvent::HelperDenied {
            action,
            sender: &sender,
            reason: &why,
        }
        .emit();
        HelperError::NotAuthorized(format!("Not authorized to {action}: {why}"))
    };
    let subject = Subject::new_for_message_header(header).map_err(|e| denied(e.to_string()))?;
    let authority = AuthorityProxy::new(connection)
        .await
        .map_err(|e| denied(format!("cannot reach polkit ({e})")))?;
    let interactive = header
        .primary()
        .flags()
        .contains(Flags::AllowInteractiveAuth);
    let flags = if interactive {
        CheckAuthorizationFlags::AllowUserInteraction.into()
    } else {
        Default::default()
    };
    let result = authority
        .check_authorization(&subject, action, &HashMap::new(), flags, "")
        .await
        .map_err(|e| denied(format!("polkit failed ({e})")))?;
    if result.is_authorized {
        return Ok(());
    }
    if result.is_challenge && !interactive {
        return Err(HelperError::InteractionRequired(format!(
            "{action} needs an administrator's authentication; call again allowing interactive \
             authorization, with a polkit agent running (e.g. pkttyagent)"
        )));
    }
    Err(denied("polkit said no".into()))
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
        .map_err(HelperError::from)
}

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
        authorize(connection, &header, actions::SET_PASSPHRASE).await?;
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
        authorize(connection, &header, actions::TRUST_CLIENT).await?;
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
        authorize(connection, &header, actions::MANAGE_SOCKET).await?;
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
