//! The daemon takes its unwinder from GCC's static `libgcc_eh.a`, not `libgcc_s.so.1`
//! (multipass-linkage), and so do this package's test binaries, this one included. A panic must
//! still unwind with it: through frames, running their destructors, to where it is caught; and a
//! task that panics must be reported to whoever awaits it while the runtime goes on, which is
//! how one connection's bug stays that connection's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[test]
fn this_binary_unwinds_with_the_static_unwinder() {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    assert!(
        maps.contains("libc.so."),
        "no libc in /proc/self/maps: {maps}"
    );
    assert!(
        !maps.contains("libgcc_s"),
        "libgcc_s is loaded, so the other tests here do not test the static unwinder: {maps}"
    );
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[inline(never)]
fn panic_below(dropped: Arc<AtomicBool>, depth: u32) {
    let _guard = SetOnDrop(dropped.clone());
    if depth == 0 {
        panic!("deliberate panic");
    }
    panic_below(dropped, depth - 1);
    std::hint::black_box(());
}

#[test]
fn a_panic_unwinds_through_frames_and_runs_their_destructors() {
    let dropped = Arc::new(AtomicBool::new(false));
    let caught = std::panic::catch_unwind({
        let dropped = dropped.clone();
        move || panic_below(dropped, 8)
    });
    let payload = caught.expect_err("the panic was caught");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"deliberate panic"));
    assert!(
        dropped.load(Ordering::SeqCst),
        "a frame's destructor did not run"
    );
}

#[test]
fn a_backtrace_walks_the_stack() {
    let trace = captured_below_a_named_frame();
    assert!(trace.contains("captured_below_a_named_frame"), "{trace}");
}

// A frame of its own, so that the name is in the trace in a release build too, where the test
// function itself is inlined into the harness's caller.
#[inline(never)]
fn captured_below_a_named_frame() -> String {
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    std::hint::black_box(trace)
}

#[test]
fn a_panicking_task_is_reported_and_the_runtime_goes_on() {
    let runtime = multipassd::runtime::build().expect("build the daemon's runtime");
    runtime.block_on(async {
        let failed = tokio::spawn(async { panic!("deliberate panic in a task") })
            .await
            .expect_err("the task panicked");
        assert!(failed.is_panic(), "{failed}");
        assert_eq!(
            tokio::spawn(async { 7 }).await.expect("a later task runs"),
            7
        );
    });
}
