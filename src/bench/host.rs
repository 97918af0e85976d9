//! The lab's one reader of host figures, what scenarios read about this machine rather than the
//! server's answers: the generator's own open-file limit (raised to the hard limit), which
//! process listens on the target's port, its CPU time, its RSS and peak RSS, the CPU the rest of
//! the host uses (`/proc/stat`), and the kernel's memory (`/proc/meminfo`, `/proc/slabinfo`;
//! sockets come from `crate::stats::sockstat`).
//!
//! Invariants:
//! - Only `/proc` is read and only this process's own limit is changed; nothing is signalled.
//! - A reading that cannot be made is `None`, never a guess: the report then says "unknown".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The `st` column of `/proc/net/tcp` for a listening socket.
const TCP_LISTEN: &str = "0A";

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns the soft limit now
/// in force (the old one if raising failed).
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    limit.rlim_cur
}

/// The server's processes: those of `--server-pid` if given, else the ones listening on any of
/// `addrs` (each once).
pub fn server_pids(given: &[i32], addrs: &[SocketAddr]) -> Vec<i32> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let mut pids: Vec<i32> = addrs.iter().flat_map(|&addr| listening_pids(addr)).collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// `1234, 1240`, or `unknown` when no process is known.
pub fn pid_list(pids: &[i32]) -> String {
    let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
    Some(pids.join(", ")).filter(|list| !list.is_empty()).unwrap_or_else(|| "unknown".into())
}

/// Why a figure read from `/proc/PID/FILE` is unknown, for the report.
pub fn unknown(pids: &[i32], file: &str) -> String {
    if pids.is_empty() {
        "unknown (no pid: give --server-pid)".into()
    } else {
        format!("unknown (its /proc/PID/{file} is unreadable)")
    }
}

/// The processes (other than this one) holding the socket that listens on `addr`: its inode
/// from `/proc/net/tcp{,6}`, then the `/proc/*/fd` links that name `socket:[inode]`. Empty when
/// the listener is not found or belongs to another user.
pub fn listening_pids(addr: SocketAddr) -> Vec<i32> {
    let links: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| listen_inodes(&table, addr))
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    let (Ok(proc), false) = (std::fs::read_dir("/proc"), links.is_empty()) else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let holds = |link: std::path::PathBuf| links.iter().any(|l| link.as_os_str() == l.as_str());
    proc.flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok().filter(|&pid| pid != me)?;
            // None when it is gone, or another user's.
            let mut fds = std::fs::read_dir(entry.path().join("fd")).ok()?.flatten();
            fds.any(|fd| std::fs::read_link(fd.path()).is_ok_and(holds)).then_some(pid)
        })
        .collect()
}

/// The inodes of the listening sockets in one `/proc/net/tcp` or `tcp6` table that accept
/// connections to `addr`: bound to its port, and to its address or to the unspecified one.
fn listen_inodes(table: &str, addr: SocketAddr) -> Vec<u64> {
    let listener = |line: &str| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        let bound = parse_local(local)?;
        let accepts = bound.port() == addr.port() && (bound.ip().is_unspecified() || same_ip(bound.ip(), addr.ip()));
        (*state == TCP_LISTEN && accepts).then(|| inode.parse().ok()).flatten()
    };
    table.lines().skip(1).filter_map(listener).collect()
}

/// Equal addresses, an IPv4 one also matching its IPv4-mapped IPv6 form.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    canonical(a) == canonical(b)
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6). The kernel prints each 32-bit
/// word of the address as the number it is in memory, so the words are read back in this
/// machine's byte order; the port is printed as a plain number.
fn parse_local(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word =
        |i: usize| -> Option<[u8; 4]> { Some(u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?.to_ne_bytes()) };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let words = [word(0)?, word(1)?, word(2)?, word(3)?];
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(words.as_flattened()).ok()?))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// User plus system CPU time of the processes `pids`, at one moment.
pub struct CpuSample {
    ticks: Option<u64>,
    at: Instant,
}

impl CpuSample {
    pub fn take(pids: &[i32]) -> CpuSample {
        let ticks = if pids.is_empty() { None } else { pids.iter().map(|&pid| cpu_ticks(pid)).sum::<Option<u64>>() };
        CpuSample { ticks, at: Instant::now() }
    }

    /// The CPU time used from `self` to `later`, in clock ticks (10 ms on most systems); `None`
    /// if either reading failed (a process gone, no pid known).
    pub fn used_until(&self, later: &CpuSample) -> Option<Duration> {
        let used = later.ticks?.checked_sub(self.ticks?)?;
        Some(Duration::from_secs_f64(used as f64 / ticks_per_second() as f64))
    }

    /// The CPU used from `self` to `later`, in percent of one core; `None` as for `used_until`.
    pub fn percent_until(&self, later: &CpuSample) -> Option<f64> {
        let (used, elapsed) = (self.used_until(later)?, later.at.saturating_duration_since(self.at).as_secs_f64());
        (elapsed > 0.0).then(|| used.as_secs_f64() / elapsed * 100.0)
    }
}

/// What the rest of the host does beside the server and this generator: the busy time of every
/// CPU (`/proc/stat`) and this process's own CPU time, at one moment. The difference over a
/// run, less the server's time, is the `other%` of `benches/wrk/run.sh`: well above a few per
/// cent, the run shared its cores and its figures are not clean.
pub struct OtherLoad {
    host: Option<u64>,
    mine: Option<u64>,
    at: Instant,
}

impl OtherLoad {
    pub fn take() -> OtherLoad {
        let host = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| host_busy_ticks(&stat));
        OtherLoad { host, mine: cpu_ticks(std::process::id() as i32), at: Instant::now() }
    }

    /// The CPU that processes other than this one and the server (which used `server` meanwhile)
    /// used from `self` to `later`, in percent of one core (up to 100 per core); `None` if a
    /// reading failed. Negative differences, from the ticks' rounding, read 0.
    pub fn percent_until(&self, later: &OtherLoad, server: Option<Duration>) -> Option<f64> {
        let host = later.host?.checked_sub(self.host?)?;
        let mine = later.mine?.checked_sub(self.mine?)?;
        let elapsed = later.at.saturating_duration_since(self.at).as_secs_f64();
        let other = (host as f64 - mine as f64) / ticks_per_second() as f64 - server?.as_secs_f64();
        (elapsed > 0.0).then(|| other.max(0.0) / elapsed * 100.0)
    }
}

/// The busy ticks of all CPUs on `/proc/stat`'s `cpu` line: user, nice, system, irq, softirq
/// and steal (guest time is inside user), as `benches/wrk/run.sh` adds them.
fn host_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.split_whitespace().next() == Some("cpu"))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map_while(|n| n.parse().ok()).collect();
    [0, 1, 2, 5, 6, 7].iter().map(|&i| fields.get(i).copied()).sum()
}

/// Clock ticks per second, the unit of `/proc/PID/stat`'s times.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// A memory figure of `/proc/PID/status` (`VmRSS:` the resident memory, `VmHWM:` its peak) of
/// the processes `pids`, summed, in bytes; `None` without a pid or when one cannot be read.
pub fn status_bytes(pids: &[i32], key: &str) -> Option<u64> {
    let kib = |pid: &i32| kib_field(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?, key);
    let total: Option<u64> = pids.iter().map(kib).sum();
    total.filter(|_| !pids.is_empty()).map(|kib| kib * 1024)
}

/// A `/proc/meminfo` figure (`Slab:`, `SUnreclaim:`) in bytes: host-wide.
pub fn meminfo_bytes(key: &str) -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, key).map(|kib| kib * 1024)
}

/// The figure in KiB on the `key` line of a `/proc/PID/status` or `/proc/meminfo`
/// (`VmHWM:   5424 kB`).
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
}

/// One slab cache of `/proc/slabinfo` (root only): its active objects and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlabCache {
    pub objects: u64,
    pub bytes: u64,
}

/// The caches `names` of `/proc/slabinfo`, each `None` where unreadable or absent.
pub fn slab_caches(names: &[&str]) -> Vec<Option<SlabCache>> {
    let text = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    names.iter().map(|name| slab_cache(&text, name)).collect()
}

/// `name active_objs num_objs objsize ...`.
fn slab_cache(slabinfo: &str, name: &str) -> Option<SlabCache> {
    let line = slabinfo.lines().find(|line| line.split_whitespace().next() == Some(name))?;
    let mut fields = line.split_whitespace().skip(1).map(|n| n.parse::<u64>().ok());
    let (objects, _total, size) = (fields.next()??, fields.next()??, fields.next()??);
    Some(SlabCache { objects, bytes: objects * size })
}

/// How many other caches SLUB merged into `name` (`/sys/kernel/slab/NAME/aliases`): their
/// objects count in its figures too.
pub fn slab_aliases(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/kernel/slab/{name}/aliases")).ok()?.trim().parse().ok()
}

fn cpu_ticks(pid: i32) -> Option<u64> {
    stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so the count starts after its last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0 20 4 30 10 -1
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0
";

    #[test]
    fn the_listener_of_a_port_is_found_and_connections_are_not() {
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(listen_inodes(TCP, local(8080)), [4242], "the established 8080 entry is not a listener");
        assert_eq!(listen_inodes(TCP, local(80)), [777], "0.0.0.0 accepts loopback connections");
        assert!(listen_inodes(TCP, local(81)).is_empty());
        assert!(listen_inodes(TCP, SocketAddr::from(([127, 0, 0, 2], 8080))).is_empty());
    }

    #[test]
    fn proc_addresses_parse_in_this_machines_byte_order() {
        // What the kernel prints for 127.0.0.1 and ::1 on this machine's byte order.
        let v4 = format!("{:08X}:1F90", u32::from_ne_bytes([127, 0, 0, 1]));
        assert_eq!(parse_local(&v4), Some(SocketAddr::from(([127, 0, 0, 1], 8080))));
        let one = u32::from_ne_bytes([0, 0, 0, 1]);
        let v6 = format!("{:08X}{:08X}{:08X}{one:08X}:0050", 0, 0, 0);
        assert_eq!(parse_local(&v6), Some(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 80)));
        assert_eq!(parse_local("zz:1"), None);
        assert!(same_ip("::ffff:127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4321 (a (weird) name) S 1 4321 4321 0 -1 4194560 120 0 0 0 250 37 0 0 20 0 1 0 99 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(287));
        assert_eq!(stat_cpu_ticks("1 (x) S 1"), None);
        let own = cpu_ticks(std::process::id() as i32);
        assert!(own.is_some(), "this process's own stat is readable");
    }

    #[test]
    fn the_peak_rss_is_read_in_kib() {
        assert_eq!(kib_field("Name:\ttether\nVmHWM:\t    5424 kB\nVmRSS:\t 5000 kB\n", "VmHWM:"), Some(5424));
        assert_eq!(kib_field("Name:\ttether\n", "VmHWM:"), None);
        let me = [std::process::id() as i32];
        let [peak, rss] = ["VmHWM:", "VmRSS:"].map(|key| status_bytes(&me, key));
        assert!(peak.is_some_and(|peak| peak > 0) && rss.is_some_and(|rss| rss > 0));
        assert_eq!(status_bytes(&[], "VmHWM:"), None);
        assert!(meminfo_bytes("Slab:").is_some_and(|bytes| bytes > 0));
    }

    #[test]
    fn slab_caches_count_active_objects_times_their_size() {
        let slabinfo = "slabinfo - version: 2.1\n\
                        TCP                 30     32   2368   13    8 : tunables 0 0 0\n\
                        filp              4000   4100    256   16    1 : tunables 0 0 0\n";
        assert_eq!(slab_cache(slabinfo, "TCP"), Some(SlabCache { objects: 30, bytes: 30 * 2368 }));
        assert_eq!(slab_cache(slabinfo, "dentry"), None);
    }

    #[test]
    fn the_hosts_busy_ticks_leave_idle_and_iowait_out() {
        let stat = "cpu  100 2 30 5000 70 4 5 6 0 0\ncpu0 50 1 15 2500 35 2 2 3 0 0\nintr 1\n";
        assert_eq!(host_busy_ticks(stat), Some(100 + 2 + 30 + 4 + 5 + 6));
        assert_eq!(host_busy_ticks("cpu0 1 2 3\n"), None);
        let before = OtherLoad::take();
        std::thread::sleep(Duration::from_millis(10));
        assert!(before.host.is_some() && before.mine.is_some(), "this host's /proc/stat and own stat are readable");
        let other = before.percent_until(&OtherLoad::take(), Some(Duration::ZERO));
        assert!(other.is_some_and(|percent| percent >= 0.0), "{other:?}");
        assert_eq!(before.percent_until(&OtherLoad::take(), None), None, "unknown without the server's CPU");
    }

    #[test]
    fn cpu_of_no_process_is_unknown() {
        let before = CpuSample::take(&[]);
        assert_eq!(before.percent_until(&CpuSample::take(&[])), None);
        assert!(ticks_per_second() > 0);
    }
}
