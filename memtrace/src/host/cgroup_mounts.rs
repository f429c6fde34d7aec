//! Where this host mounts its cgroup hierarchies, from /proc/self/mountinfo: the cgroup2
//! mount that `--cgroup` paths must lie under, and the cgroup v1 ones (a memory controller on
//! v1 is common still) that a user may give by mistake.
use std::path::{Path, PathBuf};

/// One cgroup hierarchy's mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub dir: PathBuf,
    /// cgroup2 (the unified hierarchy), else cgroup v1.
    pub v2: bool,
    /// A v1 hierarchy's controllers (or `name=...`), from its mount options.
    pub controllers: Vec<String>,
}

/// The cgroup mounts of this host (empty if mountinfo cannot be read).
pub fn mounts() -> Vec<CgroupMount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| parse_mountinfo(&text))
        .unwrap_or_default()
}

/// The cgroup mounts in the text of a mountinfo file.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            // "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER_OPTIONS"
            let (head, tail) = line.split_once(" - ")?;
            let dir = unescape(head.split(' ').nth(4)?);
            let mut tail = tail.split(' ');
            let (fstype, _source, options) = (tail.next()?, tail.next()?, tail.next()?);
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let controllers = if v2 {
                Vec::new()
            } else {
                (options.split(','))
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains("relatime"))
                    .map(str::to_owned)
                    .collect()
            };
            Some(CgroupMount {
                dir: PathBuf::from(dir),
                v2,
                controllers,
            })
        })
        .collect()
}

/// Where cgroup2 is mounted here, if anywhere.
pub fn cgroup2_mount() -> Option<PathBuf> {
    mounts().into_iter().find(|m| m.v2).map(|m| m.dir)
}

/// The v1 hierarchy `path` lies in, if any (the deepest mount above it).
pub fn v1_mount_of(mounts: &[CgroupMount], path: &Path) -> Option<CgroupMount> {
    (mounts.iter())
        .filter(|m| !m.v2 && path.starts_with(&m.dir))
        .max_by_key(|m| m.dir.as_os_str().len())
        .cloned()
}

/// The cgroup v2 directory of `pid`, from /proc/PID/cgroup ("0::/path") under `mount`.
pub fn cgroup2_dir_of(pid: u32, mount: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let relative = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    Some(mount.join(relative.trim_start_matches('/')))
}

/// Mountinfo escapes space, tab, newline and backslash as \ooo octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\');
        match octal.and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/my\\040unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn cgroup_mounts_from_mountinfo() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].controllers, ["memory"]);
        assert_eq!(mounts[1].controllers, ["name=systemd"]);
        assert!(mounts[2].v2);
        assert_eq!(mounts[2].dir, Path::new("/sys/fs/cgroup/my unified"));
        let v1 = v1_mount_of(&mounts, Path::new("/sys/fs/cgroup/memory/db")).unwrap();
        assert_eq!(v1.dir, Path::new("/sys/fs/cgroup/memory"));
        assert!(v1_mount_of(&mounts, Path::new("/sys/fs/cgroup/my unified/db")).is_none());
    }
}
