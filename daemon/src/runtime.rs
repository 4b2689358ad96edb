//! The daemon's async runtime.

use nix::sched::{sched_getaffinity, CpuSet};
use nix::unistd::Pid;

/// The multi-thread runtime, with one worker per CPU this process may run on.
///
/// Tokio's default number of workers comes from `std::thread::available_parallelism`, which also
/// looks for a cgroup CPU quota: it reads /proc/self/cgroup and then the quota files of that
/// cgroup, a dozen system calls on /proc and /sys that took 0.12-0.22 ms of every cold start
/// (docs/PERFORMANCE.md). The two counts differ only under a CPU quota, which the unit does not
/// set; there the workers beyond the quota are threads that mostly sleep.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus())
        .enable_all()
        .build()
}

/// The CPUs in the calling thread's affinity mask (`taskset`, the unit's `CPUAffinity=`).
pub fn cpus() -> usize {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .count()
            .max(1),
        // More CPUs than a `cpu_set_t` holds (1,024): let the standard library count them.
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_cpus_the_kernel_lets_this_thread_use() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        let allowed: usize = list
            .split(',')
            .map(|range| match range.split_once('-') {
                Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
                None => 1,
            })
            .sum();
        assert_eq!(cpus(), allowed, "Cpus_allowed_list: {list}");
        // A quota can only lower the standard library's count.
        assert!(cpus() >= std::thread::available_parallelism().unwrap().get());
    }

    #[test]
    fn follows_a_narrowed_affinity() {
        // On a thread of its own: the mask is per thread and the test harness reuses none.
        std::thread::spawn(|| {
            let allowed = sched_getaffinity(Pid::from_raw(0)).unwrap();
            let first = (0..CpuSet::count())
                .find(|&cpu| allowed.is_set(cpu).unwrap())
                .unwrap();
            let mut one = CpuSet::new();
            one.set(first).unwrap();
            nix::sched::sched_setaffinity(Pid::from_raw(0), &one).unwrap();
            assert_eq!(cpus(), 1);
            assert_eq!(build().unwrap().metrics().num_workers(), 1);
        })
        .join()
        .unwrap();
    }
}
