fn main() {
    multipass_linkage::configure();
}
