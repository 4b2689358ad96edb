//! A TLS 1.3 handshake between our two real configurations entirely in memory: no socket, no
//! scheduler, each side's CPU time measured apart. This is the handshake's crypto (ECDHE, the
//! server's and client's signatures and their verification, certificate parsing, key schedule);
//! whatever a real connection costs beyond it is I/O, scheduling, HTTP/2 and the RPC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};
use tls::VerifiedClient;

/// Hand `bytes` from the wire to `conn` and let it process them.
macro_rules! feed {
    ($conn:expr, $bytes:expr) => {{
        let mut bytes: &[u8] = $bytes;
        while !bytes.is_empty() {
            $conn.read_tls(&mut bytes)?;
            $conn.process_new_packets()?;
        }
    }};
}

/// CPU time of each side of one full handshake.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeCost {
    /// The client's work.
    pub client: Duration,
    /// The server's work (including verifying the client's signature).
    pub server: Duration,
}

/// Run one full handshake in memory; the server's view of the client as well.
pub fn handshake(
    server: &Arc<rustls::ServerConfig>,
    client: &Arc<rustls::ClientConfig>,
) -> Result<(HandshakeCost, Option<VerifiedClient>)> {
    let mut cost = HandshakeCost {
        client: Duration::ZERO,
        server: Duration::ZERO,
    };
    let t = Instant::now();
    let mut c = ClientConnection::new(client.clone(), ServerName::try_from("localhost")?)?;
    cost.client += t.elapsed();
    let t = Instant::now();
    let mut s = ServerConnection::new(server.clone())?;
    cost.server += t.elapsed();
    let mut wire = Vec::with_capacity(8192);
    for _ in 0..16 {
        if !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
        // Client to server.
        wire.clear();
        let t = Instant::now();
        while c.wants_write() {
            c.write_tls(&mut wire)?;
        }
        cost.client += t.elapsed();
        let t = Instant::now();
        feed!(s, &wire);
        cost.server += t.elapsed();
        // Server to client.
        wire.clear();
        let t = Instant::now();
        while s.wants_write() {
            s.write_tls(&mut wire)?;
        }
        cost.server += t.elapsed();
        let t = Instant::now();
        feed!(c, &wire);
        cost.client += t.elapsed();
    }
    if c.is_handshaking() || s.is_handshaking() {
        bail!("in-memory handshake did not finish");
    }
    Ok((cost, VerifiedClient::from_connection(&s)))
}
