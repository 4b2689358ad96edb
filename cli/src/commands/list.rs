//! `multipass list`: the instances (or with `--snapshots` the snapshots), as a table, JSON, CSV
//! or YAML. This service manages no instances, so the lists are empty, and say so as Multipass
//! does.

use rpc::proto::instance_status::Status;
use rpc::proto::list_reply::ListContents;
use rpc::proto::{ListRequest, ListVmInstance, ListVmSnapshot};
use serde_json::json;

use super::Context;
use crate::error::Error;
use crate::output;
use crate::render;
pub use crate::render::Format;

/// List instances
///
/// List the instances of the multipass service with their state, IPv4 addresses and image, or
/// with --snapshots their snapshots. This service manages no instances: the lists are empty ("No
/// instances found.", "No snapshots found."). Needs a client the service trusts.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// List the snapshots of the instances instead
    #[arg(long)]
    snapshots: bool,
}

/// Run `multipass list`.
pub async fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let mut client = ctx.connect().await?;
    let request = ListRequest {
        verbosity_level: ctx.verbosity_level(),
        snapshots: args.snapshots,
        request_ipv4: true,
    };
    let replies = ctx
        .replies(client.list(tokio_stream::once(request)))
        .await?;
    let contents = replies
        .into_iter()
        .filter_map(|r| r.list_contents)
        .next_back();
    let text = match (args.snapshots, contents) {
        (false, Some(ListContents::InstanceList(list))) => render(&list.instances, args.format),
        (false, None) => render(&[], args.format),
        (true, Some(ListContents::SnapshotList(list))) => {
            render_snapshots(&list.snapshots, args.format)
        }
        (true, None) => render_snapshots(&[], args.format),
        (_, Some(_)) => {
            return Err(Error::Local(anyhow::anyhow!(
                "the daemon answered with the other kind of list"
            )))
        }
    };
    output::print(&text)
}

/// How Multipass names an instance's state.
fn state(instance: &ListVmInstance) -> &'static str {
    match instance
        .instance_status
        .as_ref()
        .map(|s| s.status())
        .unwrap_or(Status::Unknown)
    {
        Status::Unknown => "Unknown",
        Status::Running => "Running",
        Status::Starting => "Starting",
        Status::Restarting => "Restarting",
        Status::Stopped => "Stopped",
        Status::Deleted => "Deleted",
        Status::DelayedShutdown => "Delayed Shutdown",
        Status::Suspending => "Suspending",
        Status::Suspended => "Suspended",
        Status::Unavailable => "Unavailable",
    }
}

/// The image: OS and release, or `Not Available`.
fn image(instance: &ListVmInstance) -> String {
    if instance.current_release.is_empty() {
        "Not Available".to_string()
    } else {
        format!("{} {}", instance.os, instance.current_release)
            .trim()
            .to_string()
    }
}

/// The whole output for `instances` in `format`, ending with a newline.
pub fn render(instances: &[ListVmInstance], format: Format) -> String {
    match format {
        Format::Table if instances.is_empty() => "No instances found.\n".to_string(),
        Format::Table => {
            let mut rows = Vec::new();
            for i in instances {
                let first_ip = i.ipv4.first().map(String::as_str).unwrap_or("--");
                rows.push(vec![
                    i.name.clone(),
                    state(i).to_string(),
                    first_ip.to_string(),
                    image(i),
                ]);
                // Further addresses on lines of their own, under the first.
                for ip in i.ipv4.iter().skip(1) {
                    rows.push(vec![
                        String::new(),
                        String::new(),
                        ip.clone(),
                        String::new(),
                    ]);
                }
            }
            render::table(&["Name", "State", "IPv4", "Image"], &rows, &[24, 18, 17])
        }
        Format::Json => render::json(&json!({
            "list": instances
                .iter()
                .map(|i| json!({
                    "ipv4": i.ipv4,
                    "name": i.name,
                    "release": image(i),
                    "state": state(i),
                }))
                .collect::<Vec<_>>()
        })),
        Format::Csv => render::csv(
            &["Name", "State", "IPv4", "Release", "AllIPv4"],
            &instances
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        state(i).to_string(),
                        i.ipv4.first().cloned().unwrap_or_default(),
                        image(i),
                        i.ipv4.join(","),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Format::Yaml => render::yaml(
            &instances
                .iter()
                .map(|i| {
                    (
                        i.name.clone(),
                        json!([{"state": state(i), "ipv4": i.ipv4, "release": image(i)}]),
                    )
                })
                .collect::<serde_json::Map<_, _>>(),
        ),
    }
}

/// The whole output for `snapshots` in `format`, ending with a newline. Our snapshots carry only
/// the name of their instance (and no instance here has any).
pub fn render_snapshots(snapshots: &[ListVmSnapshot], format: Format) -> String {
    match format {
        Format::Table if snapshots.is_empty() => "No snapshots found.\n".to_string(),
        Format::Table => render::table(
            &["Instance"],
            &snapshots
                .iter()
                .map(|s| vec![s.name.clone()])
                .collect::<Vec<_>>(),
            &[],
        ),
        Format::Json => render::json(&json!({
            "errors": [],
            "info": snapshots
                .iter()
                .map(|s| (s.name.clone(), json!({})))
                .collect::<serde_json::Map<_, _>>(),
        })),
        Format::Csv => render::csv(
            &["Instance", "Snapshot", "Parent", "Comment"],
            &snapshots
                .iter()
                .map(|s| vec![s.name.clone(), String::new(), String::new(), String::new()])
                .collect::<Vec<_>>(),
        ),
        Format::Yaml => render::yaml(
            &snapshots
                .iter()
                .map(|s| (s.name.clone(), json!(null)))
                .collect::<serde_json::Map<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tests::parse;
    use crate::commands::Command;
    use rpc::proto::InstanceStatus;

    fn args_of(args: &[&str]) -> Args {
        match parse(args).unwrap().command {
            Command::List(a) => a,
            other => panic!("not list: {other:?}"),
        }
    }

    #[test]
    fn format_and_snapshots_options() {
        assert_eq!(args_of(&["list"]).format, Format::Table);
        assert!(!args_of(&["list"]).snapshots);
        assert_eq!(args_of(&["ls", "--format", "json"]).format, Format::Json);
        assert_eq!(args_of(&["list", "--format=csv"]).format, Format::Csv);
        assert_eq!(args_of(&["list", "--format", "yaml"]).format, Format::Yaml);
        assert!(args_of(&["list", "--snapshots"]).snapshots);
        assert!(parse(&["list", "--format", "xml"]).is_err());
    }

    #[test]
    fn empty_list_in_every_format() {
        assert_eq!(render(&[], Format::Table), "No instances found.\n");
        assert_eq!(render(&[], Format::Json), "{\n  \"list\": []\n}\n");
        assert_eq!(
            render(&[], Format::Csv),
            "Name,State,IPv4,Release,AllIPv4\n"
        );
        assert_eq!(render(&[], Format::Yaml), "{}\n");
    }

    #[test]
    fn no_snapshots_in_every_format() {
        assert_eq!(
            render_snapshots(&[], Format::Table),
            "No snapshots found.\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render_snapshots(&[], Format::Json)).unwrap();
        assert_eq!(json, json!({"errors": [], "info": {}}));
        assert_eq!(
            render_snapshots(&[], Format::Csv),
            "Instance,Snapshot,Parent,Comment\n"
        );
        assert_eq!(render_snapshots(&[], Format::Yaml), "{}\n");
    }

    fn instance(name: &str, status: Status, ipv4: &[&str]) -> ListVmInstance {
        ListVmInstance {
            name: name.into(),
            instance_status: Some(InstanceStatus {
                status: status as i32,
            }),
            ipv4: ipv4.iter().map(|s| s.to_string()).collect(),
            current_release: "24.04 LTS".into(),
            os: "Ubuntu".into(),
        }
    }

    #[test]
    fn table_with_instances() {
        let list = [
            instance("primary", Status::Running, &["10.0.0.2", "10.0.0.3"]),
            instance("other", Status::Stopped, &[]),
        ];
        assert_eq!(
            render(&list, Format::Table),
            "Name                    State             IPv4             Image\n\
             primary                 Running           10.0.0.2         Ubuntu 24.04 LTS\n\
             \x20                                         10.0.0.3\n\
             other                   Stopped           --               Ubuntu 24.04 LTS\n"
        );
    }

    #[test]
    fn long_and_wide_names_widen_the_column() {
        let long = "an-instance-with-a-long-name";
        let table = render(
            &[
                instance(long, Status::Running, &[]),
                instance("日本語の名前", Status::Stopped, &[]),
            ],
            Format::Table,
        );
        let lines: Vec<&str> = table.lines().collect();
        let state_at = long.len() + 2;
        assert_eq!(lines[0].find("State"), Some(state_at), "{table}");
        assert_eq!(lines[1].find("Running"), Some(state_at), "{table}");
        // Six wide characters take twelve columns: the state starts in the same column.
        let (name, rest) = lines[2].split_at("日本語の名前".len());
        assert_eq!(name, "日本語の名前");
        assert_eq!(rest.find("Stopped"), Some(state_at - 12), "{table}");
    }

    #[test]
    fn json_csv_yaml_with_an_instance() {
        let list = [instance(
            "a,b",
            Status::DelayedShutdown,
            &["10.0.0.2", "10.0.0.3"],
        )];
        let json: serde_json::Value = serde_json::from_str(&render(&list, Format::Json)).unwrap();
        assert_eq!(
            json,
            json!({"list": [{
                "ipv4": ["10.0.0.2", "10.0.0.3"], "name": "a,b", "release": "Ubuntu 24.04 LTS",
                "state": "Delayed Shutdown"
            }]})
        );
        assert_eq!(
            render(&list, Format::Csv),
            "Name,State,IPv4,Release,AllIPv4\n\
             \"a,b\",Delayed Shutdown,10.0.0.2,Ubuntu 24.04 LTS,\"10.0.0.2,10.0.0.3\"\n"
        );
        let yaml: serde_json::Value = yaml_serde::from_str(&render(&list, Format::Yaml)).unwrap();
        assert_eq!(
            yaml,
            json!({"a,b": [{
                "state": "Delayed Shutdown", "ipv4": ["10.0.0.2", "10.0.0.3"],
                "release": "Ubuntu 24.04 LTS"
            }]})
        );
    }
}
