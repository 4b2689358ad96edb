//! The helper's connection to the system bus, over a socket that does not offer to receive file
//! descriptors.
//!
//! None of the helper's methods takes a descriptor, but a caller may attach up to 16 to any
//! message, and the bus passes them on to a peer that negotiated `NEGOTIATE_UNIX_FD` (zbus always
//! does). The helper then holds them until the message is dropped, after the call is answered:
//! measured, one unprivileged user's calls ran it up to 8,204 open descriptors, against the soft
//! limit of 1,024 it has under systemd. Without the capability negotiated, `dbus-daemon` refuses
//! such a message to its sender ("Tried to send message with Unix file descriptors to a client
//! that doesn't support that") and no descriptor reaches the helper.

use std::io;
use std::os::fd::OwnedFd;

use zbus::address::transport::{Transport, UnixSocket};
use zbus::connection::socket::{BoxedSplit, ReadHalf, Split, WriteHalf};
use zbus::fdo::ConnectionCredentials;

/// A builder for the system bus connection (`DBUS_SYSTEM_BUS_ADDRESS`, or the standard path).
/// Only a bus reached by a socket path is used so; any other address (abstract socket, TCP) is
/// left to zbus as it is.
pub async fn system() -> zbus::Result<zbus::connection::Builder<'static>> {
    let address = zbus::Address::system()?;
    let path = match address.transport() {
        Transport::Unix(unix) => match unix.path() {
            UnixSocket::File(path) => path.clone(),
            _ => return zbus::connection::Builder::address(address),
        },
        _ => return zbus::connection::Builder::address(address),
    };
    let (read, write) = tokio::net::UnixStream::connect(&path).await?.into_split();
    let split: BoxedSplit = Split::new(
        Box::new(NoDescriptors(read)) as Box<dyn ReadHalf>,
        Box::new(write) as Box<dyn WriteHalf>,
    );
    Ok(zbus::connection::Builder::socket(split))
}

/// zbus's read half of a Unix socket, saying it cannot receive descriptors.
#[derive(Debug)]
struct NoDescriptors(tokio::net::unix::OwnedReadHalf);

#[async_trait::async_trait]
impl ReadHalf for NoDescriptors {
    async fn recvmsg(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        // The bus sends none without the capability; any that came anyway are closed here.
        let (read, _closed) = self.0.recvmsg(buf).await?;
        Ok((read, Vec::new()))
    }

    fn can_pass_unix_fd(&self) -> bool {
        false
    }

    async fn peer_credentials(&mut self) -> io::Result<ConnectionCredentials> {
        self.0.peer_credentials().await
    }
}
