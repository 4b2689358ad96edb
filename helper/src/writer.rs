//! What root asks of its writer child, and what the child answers: typed messages on the child's
//! standard input and output, JSON-encoded.
//!
//! The child (`multipassd-helper write-as-owner`, started as the state directory's owner; see
//! [`crate::ops`]) gets everything on a pipe, never in its argv or environment. A message is read
//! whole, up to a bound, into a buffer that is wiped when dropped; the passphrase travels as its
//! bytes (a JSON array of numbers) so that no decoder buffer but ours, also wiped, ever holds it
//! (serde_json decodes an escaped *string* through a scratch buffer it frees without wiping).

use std::fmt;
use std::io::{Read, Write};

use anyhow::{bail, Context};
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// Largest request read: a certificate is at most [`trust::pki::MAX_CERTIFICATE_PEM`] bytes, a
/// passphrase [`trust::passphrase::MAX_PASSPHRASE_LEN`] (each byte up to 4 characters here).
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest reply read.
pub const MAX_REPLY: usize = 64 * 1024;

/// What root asks the writer to do.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Set the passphrase; an empty one clears it.
    SetPassphrase {
        /// The new passphrase, already checked by root.
        passphrase: Passphrase,
    },
    /// Add a certificate to the trust store.
    Trust {
        /// Who asked, for the entry's metadata.
        uid: u32,
        /// The name to record, already checked by root.
        name: String,
        /// One PEM certificate, already checked by root.
        pem: String,
    },
}

/// What the writer answers, on its standard output, whatever happened.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Reply {
    /// The passphrase was set or cleared.
    PassphraseSet,
    /// Asked to clear a passphrase, none was set: nothing was written.
    NoPassphraseToClear,
    /// The certificate is trusted.
    Trusted {
        /// Its SHA-256 fingerprint, hex.
        fingerprint: String,
        /// Whether it was added now (false: it was trusted already, and nothing changed).
        added: bool,
    },
    /// Nothing was written; why (never holding a secret).
    Failed {
        /// The error chain.
        error: String,
    },
}

/// A passphrase on its way to the writer: wiped when dropped, never printed.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Take `passphrase`.
    pub fn new(passphrase: Zeroizing<String>) -> Passphrase {
        Passphrase(passphrase)
    }

    /// The passphrase.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Serialize for Passphrase {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = self.0.as_bytes();
        let mut seq = serializer.serialize_seq(Some(bytes.len()))?;
        for byte in bytes {
            seq.serialize_element(byte)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Passphrase {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Passphrase, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Passphrase;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a passphrase's UTF-8 bytes")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Passphrase, A::Error> {
                let limit = trust::passphrase::MAX_PASSPHRASE_LEN;
                // Room for every byte allowed up front: growing would leave copies behind.
                let mut bytes = Zeroizing::new(Vec::with_capacity(limit));
                while let Some(byte) = seq.next_element::<u8>()? {
                    if bytes.len() == limit {
                        return Err(serde::de::Error::custom(format!(
                            "a passphrase longer than {limit} bytes"
                        )));
                    }
                    bytes.push(byte);
                }
                match String::from_utf8(std::mem::take(&mut *bytes)) {
                    Ok(text) => Ok(Passphrase(Zeroizing::new(text))),
                    Err(e) => {
                        e.into_bytes().zeroize();
                        Err(serde::de::Error::custom("a passphrase that is not UTF-8"))
                    }
                }
            }
        }
        deserializer.deserialize_seq(Bytes)
    }
}

/// Write `message` to `out` (the pipe itself: no intermediate buffer holds it).
pub fn send<T: Serialize>(message: &T, out: impl Write) -> anyhow::Result<()> {
    serde_json::to_writer(out, message).context("cannot encode the message")
}

/// Read one message of at most `limit` bytes from `input`, to its end.
pub fn receive<T: DeserializeOwned>(input: impl Read, limit: usize) -> anyhow::Result<T> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(limit + 1));
    input
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the message")?;
    if bytes.len() > limit {
        bail!("the message is longer than {limit} bytes");
    }
    // The error names the position only: serde_json's own text may quote the content.
    serde_json::from_slice(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "malformed message ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + DeserializeOwned>(message: &T) -> (Vec<u8>, T) {
        let mut wire = Vec::new();
        send(message, &mut wire).unwrap();
        let back = receive(&wire[..], MAX_REQUEST).unwrap();
        (wire, back)
    }

    #[test]
    fn a_passphrase_request_survives_the_pipe() {
        // Characters JSON would escape in a string, and multi-byte ones.
        for passphrase in ["", "plain", "quote\" back\\slash\ttab", "pässwörd ✓"] {
            let request = Request::SetPassphrase {
                passphrase: Passphrase::new(Zeroizing::new(passphrase.to_string())),
            };
            let (wire, back) = round_trip(&request);
            match back {
                Request::SetPassphrase { passphrase: p } => assert_eq!(p.expose(), passphrase),
                other => panic!("{other:?}"),
            }
            // Bytes on the wire, not text: no decoder scratch buffer for the secret.
            if !passphrase.is_empty() {
                assert!(
                    !String::from_utf8_lossy(&wire).contains(passphrase),
                    "{}",
                    String::from_utf8_lossy(&wire)
                );
            }
        }
    }

    #[test]
    fn a_trust_request_survives_the_pipe() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let (_, back) = round_trip(&Request::Trust {
            uid: 1000,
            name: "laptop \"quoted\"".into(),
            pem: pem.into(),
        });
        match back {
            Request::Trust { uid, name, pem: p } => {
                assert_eq!(
                    (uid, name.as_str(), p.as_str()),
                    (1000, "laptop \"quoted\"", pem)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_reply_survives_the_pipe() {
        for reply in [
            Reply::PassphraseSet,
            Reply::Trusted {
                fingerprint: "ab".repeat(32),
                added: true,
            },
            Reply::Failed {
                error: "failed to lock /x: No space left on device".into(),
            },
        ] {
            let (_, back) = round_trip(&reply);
            assert_eq!(back, reply);
        }
    }

    #[test]
    fn the_debug_form_hides_the_passphrase() {
        let request = Request::SetPassphrase {
            passphrase: Passphrase::new(Zeroizing::new("hunter2".into())),
        };
        assert!(!format!("{request:?}").contains("hunter2"));
    }

    #[test]
    fn oversized_malformed_and_unknown_messages_are_refused() {
        let long = format!(
            "{{\"set-passphrase\":{{\"passphrase\":[{}]}}}}",
            vec!["97"; trust::passphrase::MAX_PASSPHRASE_LEN + 1].join(",")
        );
        let not_utf8 = "{\"set-passphrase\":{\"passphrase\":[255,254]}}";
        let as_text = "{\"set-passphrase\":{\"passphrase\":\"hunter2\"}}";
        let unknown_op = "{\"delete-everything\":{}}";
        let extra_field = "{\"trust\":{\"uid\":1,\"name\":\"n\",\"pem\":\"p\",\"owner\":0}}";
        let two =
            "{\"set-passphrase\":{\"passphrase\":[]}}{\"set-passphrase\":{\"passphrase\":[]}}";
        for (what, input) in [
            ("passphrase over the limit", long.as_str()),
            ("not UTF-8", not_utf8),
            ("passphrase as a string", as_text),
            ("unknown request", unknown_op),
            ("unknown field", extra_field),
            ("two messages", two),
            ("empty", ""),
        ] {
            assert!(
                receive::<Request>(input.as_bytes(), MAX_REQUEST).is_err(),
                "{what} accepted"
            );
        }
        let oversized = " ".repeat(MAX_REQUEST + 1);
        let error = receive::<Request>(oversized.as_bytes(), MAX_REQUEST).unwrap_err();
        assert!(error.to_string().contains("longer than"), "{error:#}");
        let error = receive::<Request>(as_text.as_bytes(), MAX_REQUEST).unwrap_err();
        assert!(!format!("{error:#}").contains("hunter2"), "{error:#}");
    }
}
