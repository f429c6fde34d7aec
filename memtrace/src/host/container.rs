//! Container labels from a process's cgroup path (as in /proc/PID/cgroup): the runtime's
//! container id and the Kubernetes pod UID, for the cgroupfs and systemd cgroup drivers.

/// Prefixes container runtimes put before the id in their systemd scope names.
const RUNTIME_PREFIXES: [&str; 5] = [
    "docker-",
    "cri-containerd-",
    "crio-",
    "libpod-",
    "containerd-",
];

/// What a cgroup path says about the container a process runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ContainerLabels {
    /// The container runtime's id (64 hex digits as the runtime prints it), or "" outside a container.
    pub container_id: String,
    /// The Kubernetes pod UID in its canonical dashed form (8-4-4-4-12), or "" outside a pod.
    pub pod_uid: String,
}

impl ContainerLabels {
    /// Labels from a cgroup path; fields stay "" when the path names no container or pod.
    /// Components are read from the last to the first so that the innermost match wins
    /// (runtimes may nest sub-cgroups, e.g. `crio-<id>.scope/container`).
    pub fn from_cgroup_path(path: &str) -> Self {
        let components = || path.split('/').rev().filter(|c| !c.is_empty());
        Self {
            container_id: components()
                .find_map(container_id)
                .unwrap_or_default()
                .to_owned(),
            pod_uid: components()
                .find_map(pod_uid)
                .map(|uid| uid.to_ascii_lowercase())
                .unwrap_or_default(),
        }
    }
}

/// The container id in one component: `<prefix><id>.scope` (systemd driver) or a bare `<id>`
/// (cgroupfs driver).
fn container_id(component: &str) -> Option<&str> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    let name = RUNTIME_PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name);
    // CRI-O and podman run conmon (the container's monitor) in a sibling `<runtime>-conmon-<id>`
    // scope with the same id; its processes are not the container's.
    if name.starts_with("conmon-") {
        return None;
    }
    let is_id = name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    is_id.then_some(name)
}

/// The pod UID in one component, dashed: `pod<uid>` (cgroupfs driver) or
/// `kubepods[-<qos>]-pod<uid with underscores>.slice` (systemd driver, which escapes the dashes
/// because a dash separates the levels of a slice name).
fn pod_uid(component: &str) -> Option<String> {
    let uid = if let Some(uid) = component.strip_prefix("pod") {
        uid.to_owned()
    } else {
        let rest = component
            .strip_prefix("kubepods-")?
            .strip_suffix(".slice")?;
        let uid = rest
            .strip_prefix("pod")
            .or_else(|| rest.split_once('-')?.1.strip_prefix("pod"))?;
        uid.replace('_', "-")
    };
    is_uid(&uid).then_some(uid)
}

/// A UID's shape: 36 characters, hex digits with dashes at 8-4-4-4-12.
fn is_uid(uid: &str) -> bool {
    uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b";
    const UID: &str = "1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718";
    const SYSTEMD_POD: &str = "kubepods-burstable-pod1f2e3d4c_5b6a_7980_a1b2_c3d4e5f60718.slice";

    fn labels(path: &str) -> (String, String) {
        let l = ContainerLabels::from_cgroup_path(path);
        (l.container_id, l.pod_uid)
    }

    fn container(id: &str, pod: &str) -> (String, String) {
        (id.to_owned(), pod.to_owned())
    }

    #[test]
    fn docker_cgroupfs() {
        assert_eq!(labels(&format!("/docker/{ID}")), container(ID, ""));
    }

    #[test]
    fn docker_systemd_scope() {
        assert_eq!(
            labels(&format!("/system.slice/docker-{ID}.scope")),
            container(ID, "")
        );
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        assert_eq!(
            labels(&format!("/kubepods/burstable/pod{UID}/{ID}")),
            container(ID, UID)
        );
    }

    #[test]
    fn kubernetes_systemd_driver_containerd() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/{SYSTEMD_POD}/cri-containerd-{ID}.scope"
        );
        assert_eq!(labels(&path), container(ID, UID));
    }

    #[test]
    fn kubernetes_systemd_driver_guaranteed_pod() {
        let path = format!(
            "/kubepods.slice/kubepods-pod1f2e3d4c_5b6a_7980_a1b2_c3d4e5f60718.slice/containerd-{ID}.scope"
        );
        assert_eq!(labels(&path), container(ID, UID));
    }

    #[test]
    fn podman_libpod_scope() {
        assert_eq!(
            labels(&format!("/machine.slice/libpod-{ID}.scope")),
            container(ID, "")
        );
    }

    #[test]
    fn crio_scope_without_leading_slash() {
        assert_eq!(labels(&format!("crio-{ID}.scope")), container(ID, ""));
    }

    #[test]
    fn crio_nested_sub_cgroup() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/{SYSTEMD_POD}/crio-{ID}.scope/container"
        );
        assert_eq!(labels(&path), container(ID, UID));
    }

    #[test]
    fn conmon_scope_is_not_the_container() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/{SYSTEMD_POD}/crio-conmon-{ID}.scope"
        );
        assert_eq!(labels(&path), container("", UID));
        assert_eq!(
            labels(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            container("", "")
        );
    }

    #[test]
    fn pod_uid_is_lowercased() {
        let path = format!("/kubepods/pod{}/{ID}", UID.to_ascii_uppercase());
        assert_eq!(labels(&path), container(ID, UID));
    }

    #[test]
    fn user_session_is_not_a_container() {
        assert_eq!(
            labels("/user.slice/user-0.slice/session-3.scope"),
            container("", "")
        );
    }

    #[test]
    fn root_is_not_a_container() {
        assert_eq!(labels("/"), container("", ""));
        assert_eq!(labels(""), container("", ""));
    }

    #[test]
    fn id_of_wrong_length_or_case_is_ignored() {
        assert_eq!(labels(&format!("/docker/{}", &ID[1..])), container("", ""));
        assert_eq!(labels(&format!("/docker/{ID}0")), container("", ""));
        assert_eq!(
            labels(&format!("/system.slice/docker-{}.scope", &ID[..63])),
            container("", "")
        );
        assert_eq!(
            labels(&format!("/docker/{}", ID.to_ascii_uppercase())),
            container("", "")
        );
    }

    #[test]
    fn unknown_runtime_prefix_is_ignored() {
        assert_eq!(
            labels(&format!("/system.slice/foo-{ID}.scope")),
            container("", "")
        );
    }

    #[test]
    fn pod_component_with_bad_uid_is_ignored() {
        for pod in [
            "pod1234".to_owned(),
            // Right length, dashes in the wrong places.
            "pod1f2e3d4c5-b6a-7980-a1b2-c3d4e5f60718".to_owned(),
            // Not hex.
            "pod1f2e3d4c-5b6a-7980-a1b2-c3d4e5f6071g".to_owned(),
            "kubepods-burstable-pod1f2e3d4c_5b6a.slice".to_owned(),
            format!("kubepods-burstable-pod{UID}x.slice"),
        ] {
            assert_eq!(
                labels(&format!("/kubepods/{pod}/{ID}")),
                container(ID, ""),
                "{pod}"
            );
        }
    }
}
