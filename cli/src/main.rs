// Links in what keeps the executable from loading libm (see the crate).
use multipass_linkage as _;

fn main() -> std::process::ExitCode {
    multipass_cli::main()
}
