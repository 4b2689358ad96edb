//! The helper's D-Bus errors: one stable name per kind, under `io.multipass.Helper1.Error`.

/// Why a helper method failed. Nothing was written in any case.
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
}

impl From<anyhow::Error> for HelperError {
    fn from(e: anyhow::Error) -> HelperError {
        HelperError::Failed(format!("{e:#}"))
    }
}
