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
//!
//! **Large messages.** The bus lets a message be 32 MiB (its default `max_message_size`), and
//! zbus holds a message whole from the moment it is read until its call is answered: eight
//! connections of one user sending 33.5 MB calls took the helper past 100 MiB, and the check of
//! the input that refuses them at once comes only after that. No message the helper is meant to
//! receive carries more than a certificate (16 KiB of PEM), so the reader drops the body of any
//! message longer than [`MAX_BODY`] as it reads it, holding [`DISCARD_CHUNK`] of it at a time, and
//! hands zbus the message with an empty body: the call is answered with an error about its
//! arguments, and its place in the stream is kept.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use zbus::address::transport::{Transport, UnixSocket};
use zbus::connection::socket::{BoxedSplit, ReadHalf, Split, WriteHalf};
use zbus::fdo::ConnectionCredentials;
use zbus::Message;

/// Tasks alive in the runtime beyond which no further message is read. Well above what the
/// helper needs to make progress with nothing new read: the calls it admits (64 at most), each
/// waiting for a reply that must itself be read, and zbus's own few tasks. Each task of a refused
/// call holds a few KiB until its answer is written. The messages already read when the reader
/// stops (at most the connection's queue, 64 by default) become tasks after it, so the tasks
/// alive stay below this plus that queue.
const MAX_TASKS: usize = 256;

/// How often a waiting reader looks again. Tokio has no notice of a task ending.
const RECHECK: Duration = Duration::from_millis(1);

/// The largest body a message may have and reach zbus with it: four times the largest call the
/// helper takes (a certificate's 16 KiB of PEM and a name). Replies from the bus and polkit are
/// smaller still.
const MAX_BODY: usize = 64 * 1024;

/// The largest header fields a message may have and reach zbus at all. A call's fields are a few
/// names of at most 255 bytes each and its object path, which the bus policy lets only root make
/// other than the helper's own; a message with more is skipped whole, unanswered.
const MAX_FIELDS: usize = 64 * 1024;

/// How much of a dropped body is held at a time while it is read past.
const DISCARD_CHUNK: usize = 64 * 1024;

/// A message's fixed first part: byte order, type, flags, version, body length, serial, and the
/// length of the header fields' array.
const PRIMARY_HEADER: usize = 16;

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
        Box::new(Incoming(Raw(read))) as Box<dyn ReadHalf>,
        Box::new(write) as Box<dyn WriteHalf>,
    )
}

/// zbus's read half of the helper's socket: [`Raw`], with the body of a message larger than
/// [`MAX_BODY`] dropped as it is read.
#[derive(Debug)]
struct Incoming(Raw);

#[async_trait::async_trait]
impl ReadHalf for Incoming {
    /// The next message, read by zbus's own reader ([`Raw`]'s) once any oversized body has been
    /// read past: `buffered` (bytes zbus has read and not yet used, which it keeps between calls)
    /// then holds the message's header with its body length set to zero, and whatever followed
    /// the body in what was read.
    async fn receive_message(
        &mut self,
        seq: u64,
        buffered: &mut Vec<u8>,
        fds: &mut Vec<OwnedFd>,
    ) -> zbus::Result<Message> {
        loop {
            self.fill(buffered, PRIMARY_HEADER).await?;
            let Some(Lengths { body, fields }) = Lengths::of(&buffered[..PRIMARY_HEADER]) else {
                // Not a message zbus can read; it says so.
                break;
            };
            // The fields are padded to 8 bytes whether a body follows or not.
            let header = (PRIMARY_HEADER + fields).next_multiple_of(8);
            if fields > MAX_FIELDS {
                self.skip(buffered, header + body).await?;
                continue;
            }
            if body <= MAX_BODY {
                break;
            }
            self.fill(buffered, header).await?;
            Lengths::clear_body(&mut buffered[..PRIMARY_HEADER]);
            self.skip_after(buffered, header, body).await?;
            break;
        }
        self.0.receive_message(seq, buffered, fds).await
    }

    async fn recvmsg(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        self.0.recvmsg(buf).await
    }

    fn can_pass_unix_fd(&self) -> bool {
        false
    }

    async fn peer_credentials(&mut self) -> io::Result<ConnectionCredentials> {
        self.0.peer_credentials().await
    }
}

impl Incoming {
    /// Read until `buffered` holds at least `len` bytes, no more than that from the socket.
    async fn fill(&mut self, buffered: &mut Vec<u8>, len: usize) -> io::Result<()> {
        while buffered.len() < len {
            let start = buffered.len();
            buffered.resize(len, 0);
            let read = self.0.recvmsg(&mut buffered[start..]).await;
            buffered.truncate(start + *read.as_ref().map(|(n, _)| n).unwrap_or(&0));
            if read?.0 == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// Drop `len` bytes of the stream, the buffered ones first.
    async fn skip(&mut self, buffered: &mut Vec<u8>, len: usize) -> io::Result<()> {
        self.skip_after(buffered, 0, len).await
    }

    /// Drop `len` bytes of the stream that follow its first `kept` (all buffered), keeping what
    /// follows them.
    async fn skip_after(
        &mut self,
        buffered: &mut Vec<u8>,
        kept: usize,
        len: usize,
    ) -> io::Result<()> {
        let from_buffer = len.min(buffered.len() - kept);
        buffered.drain(kept..kept + from_buffer);
        let mut left = len - from_buffer;
        let mut chunk = vec![0u8; left.min(DISCARD_CHUNK)];
        while left > 0 {
            let want = left.min(chunk.len());
            let (read, _) = self.0.recvmsg(&mut chunk[..want]).await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            left -= read;
        }
        Ok(())
    }
}

/// The lengths a message's primary header gives, in its byte order.
struct Lengths {
    body: usize,
    fields: usize,
}

impl Lengths {
    /// Those of `primary` (its first [`PRIMARY_HEADER`] bytes), unless its byte order is neither.
    fn of(primary: &[u8]) -> Option<Lengths> {
        let word = |at: usize| -> Option<usize> {
            let bytes: [u8; 4] = primary[at..at + 4].try_into().ok()?;
            let value = match primary[0] {
                b'l' => u32::from_le_bytes(bytes),
                b'B' => u32::from_be_bytes(bytes),
                _ => return None,
            };
            usize::try_from(value).ok()
        };
        Some(Lengths {
            body: word(4)?,
            fields: word(12)?,
        })
    }

    /// Say in `primary` that no body follows (zero reads the same in either byte order).
    fn clear_body(primary: &mut [u8]) {
        primary[4..8].fill(0);
    }
}

/// A Unix socket's read half as zbus reads it, saying it cannot receive descriptors and holding
/// back while [`MAX_TASKS`] tasks are alive.
#[derive(Debug)]
struct Raw(tokio::net::unix::OwnedReadHalf);

#[async_trait::async_trait]
impl ReadHalf for Raw {
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

    use tokio_stream::StreamExt;

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

    /// A helper served on one end of a socket pair, and a zbus client on the other.
    async fn served_pair(scratch: &str) -> (zbus::Connection, zbus::Connection) {
        let (server_end, client_end) = tokio::net::UnixStream::pair().unwrap();
        let (server, _) = Helper::served_nowhere(
            zbus::connection::Builder::socket(split(server_end)),
            scratch,
        );
        let client = zbus::connection::Builder::unix_stream(client_end).p2p();
        let (server, client) = tokio::join!(server.build(), client.build());
        (server.unwrap(), client.unwrap())
    }

    /// The error a call to the helper's `member` with `body` is answered with.
    async fn refusal<B>(client: &zbus::Connection, member: &str, body: &B) -> (String, String)
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let call = client.call_method(
            None::<&str>,
            OBJECT_PATH,
            Some(helper_api::INTERFACE),
            member,
            body,
        );
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Err(zbus::Error::MethodError(name, text, _))) => {
                (name.to_string(), text.unwrap_or_default())
            }
            other => panic!("{member}: not an error reply: {other:?}"),
        }
    }

    /// A body longer than [`MAX_BODY`] is dropped as it is read, and its call answered with an
    /// error about its arguments (the helper never sees the text it would refuse as too long);
    /// one within the bound reaches the method whole; a message whose header fields are longer
    /// than [`MAX_FIELDS`] is skipped unanswered. The stream stays in step through all three.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_bodies_are_dropped_as_they_are_read() {
        let (_server, client) = served_pair("multipassd-helper-large-bodies-nonexistent").await;

        // zbus's own error: the method is never called.
        let (name, text) = refusal(&client, "SetPassphrase", &("p".repeat(4 << 20),)).await;
        assert!(!name.starts_with(helper_api::INTERFACE), "{name}: {text}");
        assert!(
            !text.contains("longer than"),
            "the body reached the method: {text}"
        );

        // A certificate's PEM beyond what the helper accepts, within the reader's bound: the
        // method reads it whole and says how long it was.
        let pem = "x".repeat(MAX_BODY - 64);
        let (_, text) = refusal(&client, "TrustCertificate", &(pem.as_str(), "")).await;
        assert!(
            text.contains(&format!("{} bytes of input", pem.len())),
            "{text}"
        );

        let long_path = format!("/{}", "p".repeat(MAX_FIELDS));
        let skipped = zbus::Message::method_call(long_path.as_str(), "SetPassphrase")
            .unwrap()
            .interface(helper_api::INTERFACE)
            .unwrap()
            .build(&("a passphrase",))
            .unwrap();
        let replies = zbus::MessageStream::from(&client);
        client.send(&skipped).await.unwrap();

        // Over a peer-to-peer connection a call has no sender: refused once its input is checked.
        let (_, text) = refusal(&client, "SetPassphrase", &("a passphrase",)).await;
        assert!(text.contains("without a sender"), "{text}");
        let skipped = skipped.primary_header().serial_num();
        // Whatever else comes within a moment after that reply.
        let mut replies = replies;
        let mut answered = 0;
        let pause = Duration::from_millis(300);
        while let Ok(Some(message)) = tokio::time::timeout(pause, replies.next()).await {
            let to = message.ok().and_then(|m| m.header().reply_serial());
            answered += usize::from(to == Some(skipped));
        }
        assert_eq!(
            answered, 0,
            "the message with long header fields was answered"
        );
    }
}
