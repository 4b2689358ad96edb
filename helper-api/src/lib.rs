//! The D-Bus interface of `multipassd-helper`, defined once for every side: the helper serves
//! it, the daemon (socket access), the client (`multipass` as an administrator) and the tests
//! call it through [`Helper1Proxy`], and all of them match [`HelperError`]'s variants rather
//! than error-name strings.
//!
//! It holds names, types and no logic, and depends on zbus alone: the helper links it without
//! anything the root process does not need. `busctl` calls in the system scenarios and the D-Bus
//! and polkit files under `dbus/` and `polkit/` spell the same names: they are the outside view.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

/// The helper's well-known bus name, which is also its interface's name.
pub const BUS_NAME: &str = "io.multipass.Helper1";
/// The path of the helper's one object.
pub const OBJECT_PATH: &str = "/io/multipass/Helper1";
/// The interface the object serves.
pub const INTERFACE: &str = BUS_NAME;

/// polkit actions, one per method (declared in `polkit/io.multipass.policy`).
pub mod actions {
    /// `SetPassphrase`.
    pub const SET_PASSPHRASE: &str = "io.multipass.set-passphrase";
    /// `TrustCertificate`.
    pub const TRUST_CLIENT: &str = "io.multipass.trust-client";
    /// `SetSocketAccess`.
    pub const MANAGE_SOCKET: &str = "io.multipass.manage-socket";
}

/// Why a helper method failed. Nothing was written in any case. The names on the wire are
/// `io.multipass.Helper1.Error.<Variant>`; a D-Bus error of another name arrives as
/// [`HelperError::ZBus`].
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.multipass.Helper1.Error")]
pub enum HelperError {
    /// A D-Bus failure.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// polkit refused, or could not be asked (any error is a denial).
    NotAuthorized(String),
    /// polkit needs an administrator's password and the caller did not allow interaction.
    InteractionRequired(String),
    /// The input was refused before anything was written.
    InvalidInput(String),
    /// The operation failed.
    Failed(String),
    /// The helper is answering too many calls, in all or of this caller, to take this one.
    /// Nothing was done; the same call may succeed once the others are answered.
    Busy(String),
}

impl HelperError {
    /// Whether polkit turned the caller away (as opposed to the input or the work failing):
    /// another route, such as `pkexec` from a terminal, may then succeed.
    pub fn is_denial(&self) -> bool {
        matches!(
            self,
            HelperError::NotAuthorized(_) | HelperError::InteractionRequired(_)
        )
    }
}

/// The helper's methods as its callers see them.
///
/// The methods an administrator calls by hand carry the allow-interactive-authorization flag,
/// so that polkit may ask for a password through an agent; `SetSocketAccess` is the daemon's,
/// which has no one to ask.
#[zbus::proxy(
    interface = "io.multipass.Helper1",
    default_service = "io.multipass.Helper1",
    default_path = "/io/multipass/Helper1"
)]
pub trait Helper1 {
    /// Set the passphrase clients authenticate with; an empty one clears it.
    #[zbus(allow_interactive_auth)]
    fn set_passphrase(&self, passphrase: &str) -> Result<(), HelperError>;

    /// Trust a client certificate (one PEM block) under `name` (empty: the caller's login
    /// name); returns its SHA-256 fingerprint, hex.
    #[zbus(allow_interactive_auth)]
    fn trust_certificate(&self, pem: &str, name: &str) -> Result<String, HelperError>;

    /// Open (`true`: root:root 0666) or restrict (root:<admin group> 0660) the daemon's socket.
    fn set_socket_access(&self, open: bool) -> Result<(), HelperError>;
}

/// The helper's proxy on `connection`. The interface has no properties, so no property cache
/// (and none of the bus traffic that keeps one current).
pub async fn proxy(connection: &zbus::Connection) -> zbus::Result<Helper1Proxy<'static>> {
    Helper1Proxy::builder(connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn error_names_on_the_wire() {
        for (error, name) in [
            (
                HelperError::NotAuthorized(String::new()),
                "io.multipass.Helper1.Error.NotAuthorized",
            ),
            (
                HelperError::InteractionRequired(String::new()),
                "io.multipass.Helper1.Error.InteractionRequired",
            ),
            (
                HelperError::InvalidInput(String::new()),
                "io.multipass.Helper1.Error.InvalidInput",
            ),
            (
                HelperError::Failed(String::new()),
                "io.multipass.Helper1.Error.Failed",
            ),
        ] {
            assert_eq!(error.name().as_str(), name);
        }
    }

    #[test]
    fn a_method_error_reply_becomes_its_variant() {
        let reply = |name: &str| {
            zbus::Error::MethodError(
                zbus::names::OwnedErrorName::try_from(name).unwrap(),
                Some("why".into()),
                zbus::message::Message::method_call("/", "M")
                    .unwrap()
                    .build(&())
                    .unwrap(),
            )
        };
        let denied = HelperError::from(reply("io.multipass.Helper1.Error.InteractionRequired"));
        assert!(
            matches!(&denied, HelperError::InteractionRequired(why) if why == "why"),
            "{denied:?}"
        );
        assert!(denied.is_denial());
        let invalid = HelperError::from(reply("io.multipass.Helper1.Error.InvalidInput"));
        assert!(matches!(invalid, HelperError::InvalidInput(_)));
        assert!(!invalid.is_denial());
        let other = HelperError::from(reply("org.freedesktop.DBus.Error.ServiceUnknown"));
        assert!(matches!(other, HelperError::ZBus(_)), "{other:?}");
    }
}
