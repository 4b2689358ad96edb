//! The helper's connection to the system bus: a socket that does not offer to receive file
//! descriptors, and that reads no further message while too many calls are being answered.
//!
//! **Descriptors.** None of the helper's methods takes one, but a caller may attach up to 16 to
//! any message, and the bus passes them on to a peer that negotiated `NEGOTIATE_UNIX_FD` (zbus
//! always does). The helper then holds them until the message is dropped, after the call is
//! answered: measured, one unprivileged user's calls ran it up to 8,204 open descriptors, against
//! the soft limit of 1,024 it has under systemd. Without the capability negotiated, `dbus-daemon`
//! refuses such a message to its sender ("Tried to send message with Unix file descriptors to a
//! client that doesn't support that") and no descriptor reaches the helper.
//!
//! **Calls read ahead.** zbus spawns a task for each method call as soon as it is read, and
//! nothing waits for those tasks. A call refused as one too many in flight is answered at once,
//! but its answer still waits its turn to be written while the bus is busy; meanwhile the reader
//! goes on reading. Under one user's flood (16 connections, 128 calls in flight on each) the
//! helper's peak memory grew by 2.5 to 12.8 MiB from run to run, and a peer that wrote 5,000
//! calls and read no answer made it hold 4,724 tasks (28 MiB): bounded only by what the bus lets
//! its users queue (32,768 calls awaiting answers per user). So the reader waits while
//! the runtime has [`MAX_TASKS`] tasks alive: the calls then wait in the bus, which holds them
//! within its own limits per connection and per user and refuses the rest to their senders.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use zbus::address::transport::{Transport, UnixSocket};
use zbus::connection::socket::{BoxedSplit, ReadHalf, Split, WriteHalf};
use zbus::fdo::ConnectionCredentials;

/// Tasks alive in the runtime beyond which no further message is read. Well above what the
/// helper needs to make progress with nothing new read: the calls it admits (64 at most), each
/// waiting for a reply that must itself be read, and zbus's own few tasks. Each task of a refused
/// call holds a few KiB until its answer is written. The messages already read when the reader
/// stops (at most the connection's queue, 64 by default) become tasks after it, so the tasks
/// alive stay below this plus that queue.
const MAX_TASKS: usize = 256;

/// How often a waiting reader looks again. Tokio has no notice of a task ending.
const RECHECK: Duration = Duration::from_millis(1);

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
    let stream = tokio::net::UnixStream::connect(&path).await?;
    Ok(zbus::connection::Builder::socket(split(stream)))
}

/// `stream` as zbus's halves, reading through [`Incoming`].
fn split(stream: tokio::net::UnixStream) -> BoxedSplit {
    let (read, write) = stream.into_split();
    Split::new(
        Box::new(Incoming(read)) as Box<dyn ReadHalf>,
        Box::new(write) as Box<dyn WriteHalf>,
    )
}

/// zbus's read half of a Unix socket, saying it cannot receive descriptors and holding back
/// while [`MAX_TASKS`] tasks are alive.
#[derive(Debug)]
struct Incoming(tokio::net::unix::OwnedReadHalf);

#[async_trait::async_trait]
impl ReadHalf for Incoming {
    async fn recvmsg(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        let runtime = tokio::runtime::Handle::current().metrics();
        while runtime.num_alive_tasks() >= MAX_TASKS {
            tokio::time::sleep(RECHECK).await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};

    use helper_api::OBJECT_PATH;

    use crate::bus::Helper;

    /// A raw D-Bus peer: the EXTERNAL handshake as this uid, then whatever it writes.
    fn handshake(peer: &mut UnixStream) {
        let uid = nix::unistd::getuid().as_raw().to_string();
        let uid: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        write!(peer, "\0AUTH EXTERNAL {uid}\r\n").unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8];
        while !line.ends_with(b"\r\n") {
            peer.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        assert!(
            line.starts_with(b"OK "),
            "{}",
            String::from_utf8_lossy(&line)
        );
        peer.write_all(b"BEGIN\r\n").unwrap();
    }

    /// The type of an error message.
    const ERROR: u8 = 3;

    /// Read one whole message (little-endian, as zbus writes) and return its type.
    fn read_message(peer: &mut UnixStream) -> u8 {
        let mut primary = [0u8; 16];
        peer.read_exact(&mut primary).unwrap();
        assert_eq!(primary[0], b'l', "big-endian message");
        let body = u32::from_le_bytes(primary[4..8].try_into().unwrap()) as usize;
        let fields = u32::from_le_bytes(primary[12..16].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; fields.next_multiple_of(8) + body];
        peer.read_exact(&mut rest).unwrap();
        primary[1]
    }

    /// A peer that writes calls and does not read the answers cannot make the helper read ahead
    /// of what it answers: the answers wait to be written, and the calls behind them wait in the
    /// socket, not as tasks holding their messages. Once the peer reads, every call is answered.
    /// (Without the bound, the tasks alive went up with the calls written.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_are_not_read_ahead_of_their_answers() {
        const CALLS: usize = 5000;
        let (server_end, mut peer) = UnixStream::pair().unwrap();
        server_end.set_nonblocking(true).unwrap();
        let server_end = tokio::net::UnixStream::from_std(server_end).unwrap();
        let (server, _) = Helper::served_nowhere(
            zbus::connection::Builder::socket(split(server_end)),
            "multipassd-helper-read-ahead-nonexistent",
        );
        let server = server.build();
        let (server, ()) = tokio::join!(server, async {
            tokio::task::spawn_blocking({
                let mut peer = peer.try_clone().unwrap();
                move || handshake(&mut peer)
            })
            .await
            .unwrap()
        });
        let server = server.unwrap();
        // Messages read before the reader stopped wait in the connection's queue, then become
        // tasks too.
        let bound = MAX_TASKS + server.max_queued() + 8;

        // Over a peer-to-peer connection a call has no sender, so each is refused at once.
        let call = zbus::Message::method_call(OBJECT_PATH, "SetPassphrase")
            .unwrap()
            .interface(helper_api::INTERFACE)
            .unwrap()
            .build(&("a passphrase",))
            .unwrap();
        let written = std::sync::Arc::new(AtomicBool::new(false));
        let writer = std::thread::spawn({
            let mut peer = peer.try_clone().unwrap();
            let written = written.clone();
            move || {
                for _ in 0..CALLS {
                    peer.write_all(call.data()).unwrap();
                }
                written.store(true, Ordering::SeqCst);
            }
        });

        let metrics = tokio::runtime::Handle::current().metrics();
        let mut most = 0;
        for _ in 0..1000 {
            most = most.max(metrics.num_alive_tasks());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        eprintln!("{most} tasks alive at most, the bound {bound}");
        assert!(
            most <= bound,
            "{most} tasks alive, above {MAX_TASKS} and the messages queued ({bound})"
        );
        assert!(
            !written.load(Ordering::SeqCst),
            "all {CALLS} calls were taken in while none was answered"
        );

        let answers = tokio::task::spawn_blocking(move || {
            (0..CALLS)
                .map(|_| read_message(&mut peer))
                .filter(|&kind| kind == ERROR)
                .count()
        });
        assert_eq!(
            answers.await.unwrap(),
            CALLS,
            "every call answered with an error"
        );
        writer.join().unwrap();
    }
}
