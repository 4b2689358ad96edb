//! A gRPC stack other than ours (Python grpcio, the C core that stock Multipass clients also use)
//! talks to the daemon: it is refused before authenticating, authenticates with the passphrase,
//! and is then served an empty instance list.

use std::process::Command;
use std::time::Duration;

use multipass_system_tests::process::run;
use multipass_system_tests::{require_root, Daemon, Group, TestDir, User, NOT_AUTHENTICATED};

const PYTHON: &str = "/usr/bin/python3";
const PASSPHRASE: &str = "py-grpc-pass";

const PROTO: &str = r#"syntax = "proto3";
package multipass;

service Rpc {
  rpc list (stream ListRequest) returns (stream ListReply);
  rpc authenticate (stream AuthenticateRequest) returns (stream AuthenticateReply);
}

message AuthenticateRequest {
  string passphrase = 1;
  int32 verbosity_level = 2;
}
message AuthenticateReply { string log_line = 1; }

message InstanceStatus {
  enum Status {
    UNKNOWN = 0;
    RUNNING = 1;
    STARTING = 2;
    RESTARTING = 3;
    STOPPED = 4;
    DELETED = 5;
    DELAYED_SHUTDOWN = 6;
    SUSPENDING = 7;
    SUSPENDED = 8;
    UNAVAILABLE = 9;
  }
  Status status = 1;
}

message ListRequest {
  int32 verbosity_level = 1;
  bool snapshots = 2;
  bool request_ipv4 = 3;
}
message ListVMInstance {
  string name = 1;
  InstanceStatus instance_status = 2;
  repeated string ipv4 = 3;
  string current_release = 5;
  string os = 6;
}
message ListVMSnapshot { string name = 1; }
message InstancesList { repeated ListVMInstance instances = 1; }
message SnapshotsList { repeated ListVMSnapshot snapshots = 1; }
message ListReply {
  oneof list_contents {
    InstancesList instance_list = 1;
    SnapshotsList snapshot_list = 2;
  }
  string log_line = 3;
}
"#;

/// Arguments: generated-code dir, socket, root CA, client cert, client key. Passphrase on stdin.
/// Prints one line per step: `STEP OK ...` or `STEP <CODE> <json details>`.
const SCRIPT: &str = r#"
import json, sys
gen, sock, ca, cert, key = sys.argv[1:6]
sys.path.insert(0, gen)
import grpc
import multipass_pb2 as pb
import multipass_pb2_grpc as pb_grpc

passphrase = sys.stdin.readline().rstrip("\n")

def read(path):
    with open(path, "rb") as f:
        return f.read()

creds = grpc.ssl_channel_credentials(
    root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert))
channel = grpc.secure_channel(
    "unix:" + sock, creds,
    options=[("grpc.ssl_target_name_override", "localhost"),
             ("grpc.default_authority", "localhost")])
stub = pb_grpc.RpcStub(channel)

def step(name, call):
    try:
        result = call()
        print(name, "OK", result, flush=True)
    except grpc.RpcError as e:
        print(name, e.code().name, json.dumps(e.details()), flush=True)

def do_list():
    replies = list(stub.list(iter([pb.ListRequest()]), timeout=20))
    kinds = [r.WhichOneof("list_contents") for r in replies]
    instances = sum(len(r.instance_list.instances) for r in replies)
    return json.dumps({"replies": len(replies), "kinds": kinds, "instances": instances})

def do_auth():
    replies = list(stub.authenticate(
        iter([pb.AuthenticateRequest(passphrase=passphrase)]), timeout=30))
    return json.dumps({"replies": len(replies)})

step("LIST1", do_list)
step("AUTH", do_auth)
step("LIST2", do_list)
"#;

fn python_has_grpc() -> Result<(), String> {
    let out = Command::new(PYTHON)
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .output()
        .map_err(|e| format!("cannot run {PYTHON}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn python_grpcio_client() {
    if !require_root() {
        return;
    }
    if let Err(e) = python_has_grpc() {
        panic!(
            "the Python gRPC modules are missing; install them with \
             `apt-get install python3-grpcio python3-grpc-tools`\n{e}"
        );
    }
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let a = User::create(&dir, Some(&admins));
    let c = User::create(&dir, None);
    let daemon = Daemon::start(&dir, &admins);
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "first admin client `list`");
    daemon
        .run_as(
            &a,
            &["set", "local.passphrase"],
            Some(&format!("{PASSPHRASE}\n{PASSPHRASE}\n")),
        )
        .assert_code(0, "A `set local.passphrase`");
    // C's certificate and key, as the CLI creates them.
    daemon.ensure_client_cert(&c, &["version"], None);

    // Generate the Python code (readable by C: the test directory is 0755, files 0644).
    let gen = dir.subdir("py");
    std::fs::write(gen.join("multipass.proto"), PROTO).unwrap();
    std::fs::write(gen.join("client.py"), SCRIPT).unwrap();
    let mut protoc = Command::new(PYTHON);
    protoc
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&gen)
        .arg(format!("--python_out={}", gen.display()))
        .arg(format!("--grpc_python_out={}", gen.display()))
        .arg(gen.join("multipass.proto"));
    run(protoc, None, Duration::from_secs(60)).assert_code(0, "grpc_tools.protoc");

    let mut cmd = c.command(std::path::Path::new(PYTHON), &[]);
    cmd.arg(gen.join("client.py"))
        .arg(&gen)
        .arg(daemon.socket())
        .arg(daemon.root_cert())
        .arg(c.cert_path())
        .arg(c.key_path());
    let out = run(
        cmd,
        Some(&format!("{PASSPHRASE}\n")),
        Duration::from_secs(90),
    );
    out.assert_code(0, "the Python client script");
    println!("{}", out.stdout);

    let line = |step: &str| -> &str {
        out.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{step} ")))
            .unwrap_or_else(|| panic!("no {step} line\n{out}"))
    };
    let not_authenticated = format!(
        "LIST1 UNAUTHENTICATED \"{}\"",
        NOT_AUTHENTICATED.replace('\n', "\\n")
    );
    assert_eq!(
        line("LIST1"),
        not_authenticated,
        "grpcio `list` before authenticating\n{out}"
    );
    assert!(
        line("AUTH").starts_with("AUTH OK "),
        "grpcio `authenticate` with the passphrase\n{out}"
    );
    let list2 = line("LIST2");
    assert!(
        list2.starts_with("LIST2 OK "),
        "grpcio `list` after authenticating\n{out}"
    );
    assert!(
        list2.contains("\"instances\": 0") && list2.contains("\"instance_list\""),
        "`list` should answer an empty instance list: {list2}"
    );

    // The CLI agrees that C is now trusted.
    daemon
        .run_as(&c, &["list"], None)
        .assert_code(0, "C `list` (CLI) after authenticating with grpcio");
    assert!(
        daemon.store_certs().contains(&c.cert_der()),
        "C's certificate should be in the store"
    );
}
