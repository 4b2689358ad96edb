//! The process tests' own test harness (every file of `tests/tests/` is built with
//! `harness = false` and ends with [`process_tests!`](crate::process_tests)).
//!
//! libtest cannot mark a test skipped once it has started: a root-only test that returned early
//! without root was reported as *passed*, although it ran nothing. This harness (libtest-mimic,
//! with libtest's command line and output) decides before any test starts:
//!
//! - as root, every test runs, so a plain `cargo test` as root runs them all;
//! - without root, root-only tests are reported **ignored**, never passed;
//! - without root and with `CI=true`, root-only tests **fail** (CI must not skip them).
//!
//! Root-only tests carry the kind `root` (`[root] name` in the output and in `--list`), so
//! `cargo test -- '[root]'` selects exactly them; `scripts/test.sh` checks with it that an
//! unprivileged run reports them ignored.

use libtest_mimic::{Arguments, Failed, Trial};

/// The kind of a root-only test, as libtest-mimic prints it: `[root] name`.
pub const ROOT_KIND: &str = "root";

/// Why a root-only test cannot run here.
const NEEDS_ROOT: &str = "this process test needs root (it creates users with useradd and runs \
                          commands as them with setpriv)";

/// One test of a file: its name, whether it needs root, and its body (panics on failure).
pub struct Test {
    name: &'static str,
    needs_root: bool,
    body: fn(),
}

impl Test {
    /// A test that needs root.
    pub fn root(name: &'static str, body: fn()) -> Test {
        Test {
            name,
            needs_root: true,
            body,
        }
    }

    /// A test that runs as any user.
    pub fn plain(name: &'static str, body: fn()) -> Test {
        Test {
            name,
            needs_root: false,
            body,
        }
    }
}

/// What to do with the root-only tests of this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootTests {
    /// Run them (we are root).
    Run,
    /// Report them ignored (not root, not CI).
    Ignore,
    /// Fail them (not root, `CI=true`).
    Fail,
}

impl RootTests {
    /// The decision for this process: root runs them; without root, `CI=true` fails them and
    /// anything else ignores them.
    pub fn here() -> RootTests {
        RootTests::decide(
            nix::unistd::geteuid().is_root(),
            std::env::var("CI").as_deref() == Ok("true"),
        )
    }

    fn decide(root: bool, ci: bool) -> RootTests {
        match (root, ci) {
            (true, _) => RootTests::Run,
            (false, true) => RootTests::Fail,
            (false, false) => RootTests::Ignore,
        }
    }
}

/// Run `tests` with libtest's command line (filters, `--list`, `--test-threads`, `--ignored`,
/// `--include-ignored`), then exit with its status.
pub fn main(tests: Vec<Test>) -> ! {
    let args = Arguments::from_args();
    let root_tests = RootTests::here();
    if !args.list && root_tests == RootTests::Ignore && tests.iter().any(|t| t.needs_root) {
        eprintln!(
            "not root: the [root] tests are ignored. Run them as root (e.g. `sudo -E cargo test \
             --workspace`); with CI=true they fail instead."
        );
    }
    let trials = tests
        .into_iter()
        .map(|test| trial(test, root_tests))
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

fn trial(test: Test, root_tests: RootTests) -> Trial {
    let Test {
        name,
        needs_root,
        body,
    } = test;
    let runnable = !needs_root || root_tests == RootTests::Run;
    let trial = Trial::test(name, move || {
        if runnable {
            body();
            Ok(())
        } else if root_tests == RootTests::Fail {
            Err(Failed::from(format!(
                "{NEEDS_ROOT}; CI=true, so this is a failure, not a skip"
            )))
        } else {
            // Only reached when an ignored test is asked for (`--ignored`).
            Err(Failed::from(NEEDS_ROOT))
        }
    });
    if needs_root {
        trial
            .with_kind(ROOT_KIND)
            .with_ignored_flag(root_tests == RootTests::Ignore)
    } else {
        trial
    }
}

/// The `main` of a process-test file: the root-only tests, then (optionally) those that run as
/// any user, each a `fn()` of the file.
///
/// ```text
/// multipass_system_tests::process_tests! {
///     root: [first_client_is_trusted, second_client_is_refused],
///     plain: [units_verify_without_warnings],
/// }
/// ```
#[macro_export]
macro_rules! process_tests {
    (root: [$($root:ident),* $(,)?] $(, plain: [$($plain:ident),* $(,)?])? $(,)?) => {
        fn main() {
            $crate::harness::main(vec![
                $($crate::harness::Test::root(stringify!($root), $root),)*
                $($($crate::harness::Test::plain(stringify!($plain), $plain),)*)?
            ])
        }
    };
    (plain: [$($plain:ident),* $(,)?] $(,)?) => {
        $crate::process_tests! { root: [], plain: [$($plain),*] }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_runs_ci_without_root_fails_else_ignored() {
        assert_eq!(RootTests::decide(true, false), RootTests::Run);
        assert_eq!(RootTests::decide(true, true), RootTests::Run);
        assert_eq!(RootTests::decide(false, true), RootTests::Fail);
        assert_eq!(RootTests::decide(false, false), RootTests::Ignore);
    }
}
