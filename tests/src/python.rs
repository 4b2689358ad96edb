//! A stock-protocol client: Python grpcio (the gRPC C core that Multipass's own client uses too),
//! with code generated from a copy of the Multipass protocol, so tests can show that a client
//! other than ours is refused, authenticates (with a passphrase or an enrollment token) and is
//! served.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{run, CliOutput};
use crate::{Daemon, TestDir, User};

const PYTHON: &str = "/usr/bin/python3";

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

/// Arguments: generated-code dir, socket, root CA, client cert, client key. The secret
/// (passphrase or token) on stdin. Prints one line per step: `STEP OK <json>` or
/// `STEP <CODE> <json details>`.
const SCRIPT: &str = r#"
import json, sys
gen, sock, ca, cert, key = sys.argv[1:6]
sys.path.insert(0, gen)
import grpc
import multipass_pb2 as pb
import multipass_pb2_grpc as pb_grpc

secret = sys.stdin.readline().rstrip("\n")

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
        iter([pb.AuthenticateRequest(passphrase=secret)]), timeout=30))
    return json.dumps({"replies": len(replies), "log_lines": [r.log_line for r in replies]})

step("LIST1", do_list)
step("AUTH", do_auth)
step("LIST2", do_list)
"#;

/// Generated client code in a directory of the test, readable by every test user.
#[derive(Debug)]
pub struct PythonClient {
    dir: PathBuf,
}

impl PythonClient {
    /// Check that grpcio is installed (panic with how to install it otherwise) and generate the
    /// client in `dir/py`.
    pub fn prepare(dir: &TestDir) -> PythonClient {
        let out = Command::new(PYTHON)
            .args(["-c", "import grpc, grpc_tools.protoc"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}"));
        if !out.status.success() {
            panic!(
                "the Python gRPC modules are missing; install them with \
                 `apt-get install python3-grpcio python3-grpc-tools`\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let gen = dir.subdir("py");
        std::fs::write(gen.join("multipass.proto"), PROTO).expect("write the proto");
        std::fs::write(gen.join("client.py"), SCRIPT).expect("write the script");
        let mut protoc = Command::new(PYTHON);
        protoc
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(&gen)
            .arg(format!("--python_out={}", gen.display()))
            .arg(format!("--grpc_python_out={}", gen.display()))
            .arg(gen.join("multipass.proto"));
        run(protoc, None, Duration::from_secs(60)).assert_code(0, "grpc_tools.protoc");
        PythonClient { dir: gen }
    }

    /// As `user`, with `user`'s client certificate: `list`, `authenticate` with `secret`, `list`.
    pub fn run(&self, user: &User, daemon: &Daemon, secret: &str) -> CliOutput {
        let mut cmd = user.command(Path::new(PYTHON), &[]);
        cmd.arg(self.dir.join("client.py"))
            .arg(&self.dir)
            .arg(daemon.socket())
            .arg(daemon.root_cert())
            .arg(user.cert_path())
            .arg(user.key_path());
        let out = run(cmd, Some(&format!("{secret}\n")), Duration::from_secs(90));
        out.assert_code(0, "the Python client script");
        out
    }
}

/// The line of step `step` (`LIST1`, `AUTH`, `LIST2`) in the script's output.
#[track_caller]
pub fn step<'a>(out: &'a CliOutput, step: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.starts_with(&format!("{step} ")))
        .unwrap_or_else(|| panic!("no {step} line\n{out}"))
}
