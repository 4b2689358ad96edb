//! `multipass list`: the instances, as a table, JSON, CSV or YAML.

use clap::ValueEnum;
use rpc::proto::instance_status::Status;
use rpc::proto::list_reply::ListContents;
use rpc::proto::{ListRequest, ListVmInstance};

use super::Context;
use crate::error::Error;
use crate::output;

/// Output formats (of `list` and the `trust` listings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people
    Table,
    /// `{"list": [...]}`
    Json,
    /// A header line and one line per instance
    Csv,
    /// A mapping from instance name to its details
    Yaml,
}

/// Arguments of `multipass list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Run `multipass list`.
pub async fn run(ctx: &Context, args: Args) -> Result<(), Error> {
    let mut client = ctx.connect().await?;
    let request = ListRequest {
        verbosity_level: ctx.verbosity_level(),
        snapshots: false,
        request_ipv4: true,
    };
    let replies = ctx
        .replies(client.list(tokio_stream::once(request)).await)
        .await?;
    let instances = replies
        .into_iter()
        .filter_map(|r| match r.list_contents {
            Some(ListContents::InstanceList(list)) => Some(list.instances),
            _ => None,
        })
        .next_back()
        .unwrap_or_default();
    output::print(&render(&instances, args.format))
}

/// The whole output for `instances` in `format`, ending with a newline.
pub fn render(instances: &[ListVmInstance], format: Format) -> String {
    match format {
        Format::Table => table(instances),
        Format::Json => json(instances),
        Format::Csv => csv(instances),
        Format::Yaml => yaml(instances),
    }
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

/// The image column: OS and release, or `Not Available`.
fn image(instance: &ListVmInstance) -> String {
    if instance.current_release.is_empty() {
        "Not Available".to_string()
    } else if instance.os.is_empty() {
        instance.current_release.clone()
    } else {
        format!("{} {}", instance.os, instance.current_release)
    }
}

fn table(instances: &[ListVmInstance]) -> String {
    if instances.is_empty() {
        return "No instances found.\n".to_string();
    }
    let width = |min: usize, longest: usize| min.max(longest + 2);
    let name_w = width(
        24,
        instances
            .iter()
            .map(|i| i.name.chars().count())
            .max()
            .unwrap_or(0),
    );
    let state_w = width(
        18,
        instances.iter().map(|i| state(i).len()).max().unwrap_or(0),
    );
    let ipv4_w = width(
        17,
        instances
            .iter()
            .flat_map(|i| i.ipv4.iter().map(|a| a.chars().count()))
            .max()
            .unwrap_or(0),
    );
    let mut out = format!(
        "{:<name_w$}{:<state_w$}{:<ipv4_w$}Image\n",
        "Name", "State", "IPv4"
    );
    for instance in instances {
        let first_ip = instance.ipv4.first().map(String::as_str).unwrap_or("--");
        out += &format!(
            "{:<name_w$}{:<state_w$}{:<ipv4_w$}{}\n",
            instance.name,
            state(instance),
            first_ip,
            image(instance)
        );
        for ip in instance.ipv4.iter().skip(1) {
            out += &format!("{:<name_w$}{:<state_w$}{ip}\n", "", "");
        }
    }
    out
}

fn json(instances: &[ListVmInstance]) -> String {
    let list: Vec<_> = instances
        .iter()
        .map(|i| {
            serde_json::json!({
                "ipv4": i.ipv4,
                "name": i.name,
                "release": if i.current_release.is_empty() { "Not Available" } else { &i.current_release },
                "state": state(i),
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&serde_json::json!({ "list": list }))
        .expect("JSON values always serialise");
    text.push('\n');
    text
}

pub(crate) fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn csv(instances: &[ListVmInstance]) -> String {
    let mut out = "Name,State,IPv4,IPv6,Release,AutoStart\n".to_string();
    for i in instances {
        let fields = [
            csv_field(&i.name),
            csv_field(state(i)),
            csv_field(i.ipv4.first().map(String::as_str).unwrap_or("")),
            String::new(),
            csv_field(&image(i)),
            "false".to_string(),
        ];
        out += &fields.join(",");
        out.push('\n');
    }
    out
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
pub(crate) fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings always serialise")
}

fn yaml(instances: &[ListVmInstance]) -> String {
    if instances.is_empty() {
        return "{}\n".to_string();
    }
    let mut out = String::new();
    for i in instances {
        out += &format!("{}:\n", yaml_str(&i.name));
        out += &format!("  - state: {}\n", state(i));
        if i.ipv4.is_empty() {
            out += "    ipv4: []\n";
        } else {
            out += "    ipv4:\n";
            for ip in &i.ipv4 {
                out += &format!("      - {}\n", yaml_str(ip));
            }
        }
        out += &format!("    release: {}\n", yaml_str(&image(i)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tests::parse;
    use crate::commands::Command;
    use rpc::proto::InstanceStatus;

    fn format_of(args: &[&str]) -> Format {
        match parse(args).unwrap().command {
            Command::List(a) => a.format,
            other => panic!("not list: {other:?}"),
        }
    }

    #[test]
    fn format_option() {
        assert_eq!(format_of(&["list"]), Format::Table);
        assert_eq!(format_of(&["ls", "--format", "json"]), Format::Json);
        assert_eq!(format_of(&["list", "--format=csv"]), Format::Csv);
        assert_eq!(format_of(&["list", "--format", "yaml"]), Format::Yaml);
        assert!(parse(&["list", "--format", "xml"]).is_err());
    }

    #[test]
    fn empty_list_in_every_format() {
        assert_eq!(render(&[], Format::Table), "No instances found.\n");
        assert_eq!(render(&[], Format::Json), "{\n  \"list\": []\n}\n");
        assert_eq!(
            render(&[], Format::Csv),
            "Name,State,IPv4,IPv6,Release,AutoStart\n"
        );
        assert_eq!(render(&[], Format::Yaml), "{}\n");
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
    fn json_csv_yaml_with_an_instance() {
        let list = [instance("a,b", Status::DelayedShutdown, &["10.0.0.2"])];
        let json: serde_json::Value = serde_json::from_str(&render(&list, Format::Json)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"list": [{
                "ipv4": ["10.0.0.2"], "name": "a,b", "release": "24.04 LTS",
                "state": "Delayed Shutdown"
            }]})
        );
        assert_eq!(
            render(&list, Format::Csv),
            "Name,State,IPv4,IPv6,Release,AutoStart\n\
             \"a,b\",Delayed Shutdown,10.0.0.2,,Ubuntu 24.04 LTS,false\n"
        );
        assert_eq!(
            render(&list, Format::Yaml),
            "\"a,b\":\n  - state: Delayed Shutdown\n    ipv4:\n      - \"10.0.0.2\"\n    \
             release: \"Ubuntu 24.04 LTS\"\n"
        );
    }
}
