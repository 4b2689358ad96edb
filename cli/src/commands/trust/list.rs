//! `multipass trust list`: the trusted clients.

use rpc::trust_proto::{Enrolment, ListClientsRequest, TrustedClient};
use serde_json::{json, Value};
use tonic::Code;

use super::records::{Column, Records};
use crate::commands::Context;
use crate::error::Error;
use crate::output;
use crate::render::Format;

/// List the clients the service trusts
///
/// List the clients the multipass service trusts. For each: its name (what `multipass trust
/// remove` takes), the start of its certificate's fingerprint (which `trust remove` takes too),
/// the user who enrolled it and their uid, how it came to be trusted (first-client, passphrase,
/// token, admin, or by-hand for a certificate appended to the trust store by hand), when, and when
/// it was last seen. The client running the command is marked with `*`. The other formats show
/// whole fingerprints and times, and whether each client is this one.
///
/// Any trusted client may list the trusted clients.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Run `multipass trust list`.
pub async fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let mut client = ctx.connect_trust().await?;
    let mut tries = 1;
    let pages = loop {
        let call = client.list_clients(ListClientsRequest {});
        match crate::commands::pages(call, MAX_LIST_BYTES).await {
            // The store changed while the pages were sent: the list is made again of the new one.
            Err(Error::Status(status)) if status.code() == Code::Aborted && tries < TRIES => {
                tries += 1;
            }
            result => break result?,
        }
    };
    let clients: Vec<TrustedClient> = pages.into_iter().flat_map(|p| p.clients).collect();
    output::print(&render(&clients, args.format))
}

/// The most of a list read: about 120 bytes a client, so 140,000 clients. (A hostile daemon's
/// empty entries of 2 bytes decode to about 136 each: this also bounds what it can make the
/// command hold, to 1.1 GB.)
const MAX_LIST_BYTES: usize = 16 << 20;

/// Lists asked for while trust changes under them, before the daemon's refusal is shown.
const TRIES: u32 = 3;

const COLUMNS: [Column; 8] = [
    Column::new("Name", "name"),
    // Enough to tell clients apart and to pass to `trust remove`.
    Column {
        header: "Fingerprint",
        key: "fingerprint",
        table_chars: Some(16),
        in_table: true,
    },
    Column::new("User", "user"),
    Column::new("UID", "uid"),
    Column::new("How", "how"),
    Column::new("Trusted", "when"),
    Column::new("Last seen", "last_seen"),
    Column {
        header: "This client",
        key: "this_client",
        table_chars: None,
        in_table: false,
    },
];

/// How the wire names an enrolment, as the store file and people write it.
pub fn enrolment_word(how: i32) -> &'static str {
    Enrolment::try_from(how)
        .ok()
        .and_then(Enrolment::known)
        .map_or("unknown", trust::Enrolment::as_str)
}

fn text_or_null(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        json!(s)
    }
}

/// An RFC 3339 time without its fraction of a second, for the table's narrow columns. Text that
/// is not such a time (a hand-edited store) is shown as it is.
fn whole_seconds(text: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| text.to_string())
}

/// The whole output for `clients` in `format`.
pub fn render(clients: &[TrustedClient], format: Format) -> String {
    let table = format == Format::Table;
    let time = |t: &str| {
        text_or_null(&if table {
            whole_seconds(t)
        } else {
            t.to_string()
        })
    };
    let rows = clients
        .iter()
        .map(|c| {
            let name = if c.is_caller && table {
                format!("{} *", if c.name.is_empty() { "-" } else { &c.name })
            } else {
                c.name.clone()
            };
            vec![
                text_or_null(&name),
                json!(c.fingerprint),
                text_or_null(&c.user),
                c.uid.map_or(Value::Null, |u| json!(u)),
                json!(enrolment_word(c.how)),
                time(&c.when),
                time(&c.last_seen),
                json!(c.is_caller),
            ]
        })
        .collect();
    let mut text = Records {
        columns: &COLUMNS,
        rows,
        root: "clients",
        empty: "No client is trusted.",
    }
    .render(format);
    if table && clients.iter().any(|c| c.is_caller) {
        text.push_str("(* this client)\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str, how: Enrolment, caller: bool) -> TrustedClient {
        TrustedClient {
            fingerprint: "0123456789abcdef0123456789abcdef".repeat(2),
            name: name.into(),
            uid: (!name.is_empty()).then_some(1000),
            user: name.into(),
            how: how as i32,
            when: if name.is_empty() {
                String::new()
            } else {
                "2026-01-02T03:04:05.123456789Z".into()
            },
            last_seen: String::new(),
            is_caller: caller,
        }
    }

    #[test]
    fn table_shows_every_enrolment() {
        let clients = [
            client("alice", Enrolment::FirstClient, true),
            client("bob", Enrolment::Passphrase, false),
            client("carol", Enrolment::Token, false),
            client("ops", Enrolment::Admin, false),
            client("", Enrolment::ByHand, false),
        ];
        let table = render(&clients, Format::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "Name     Fingerprint       User   UID   How           Trusted               Last seen"
        );
        assert_eq!(
            lines[1],
            "alice *  0123456789abcdef  alice  1000  first-client  2026-01-02T03:04:05Z  -"
        );
        for (line, how) in lines[2..6]
            .iter()
            .zip(["passphrase", "token", "admin", "by-hand"])
        {
            assert!(line.contains(how), "{line}");
        }
        assert!(lines[5].starts_with("-  "), "{}", lines[5]);
        assert_eq!(lines[6], "(* this client)");
    }

    #[test]
    fn json_has_full_fingerprints_and_nulls() {
        let json: Value = serde_json::from_str(&render(
            &[client("", Enrolment::ByHand, false)],
            Format::Json,
        ))
        .unwrap();
        let c = &json["clients"][0];
        assert_eq!(c["fingerprint"].as_str().unwrap().len(), 64);
        assert_eq!(c["how"], "by-hand");
        assert_eq!(c["name"], Value::Null);
        assert_eq!(c["uid"], Value::Null);
        assert_eq!(c["this_client"], false);
        let json: Value = serde_json::from_str(&render(
            &[client("a", Enrolment::Token, false)],
            Format::Json,
        ))
        .unwrap();
        assert_eq!(json["clients"][0]["when"], "2026-01-02T03:04:05.123456789Z");
    }

    #[test]
    fn whole_seconds_keeps_the_zone() {
        assert_eq!(
            whole_seconds("2026-01-02T03:04:05.5Z"),
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(
            whole_seconds("2026-01-02T03:04:05.123+02:00"),
            "2026-01-02T03:04:05+02:00"
        );
        assert_eq!(
            whole_seconds("2026-01-02T03:04:05Z"),
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(whole_seconds("last tuesday"), "last tuesday");
    }
}
