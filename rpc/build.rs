fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Prefer a protoc from the environment (Debian's protobuf-compiler); fall back to the one the
    // protoc-bin-vendored crate ships, so a bare machine builds too.
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    println!("cargo:rerun-if-changed=proto/multipass.proto");
    println!("cargo:rerun-if-changed=proto/trust.proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/multipass.proto", "proto/trust.proto"], &["proto"])?;
    Ok(())
}
