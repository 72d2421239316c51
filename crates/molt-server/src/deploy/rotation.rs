//! The out-of-rotation set: serving containers that autoheal took out of
//! the proxy's rotation while their health check fails.

use super::*;

impl Deployer {
    pub(super) fn out_of_rotation(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.out_of_rotation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a container out of the proxy's rotation (applied by the next
    /// route change, see `targets`); false if it was out already.
    pub fn take_out_of_rotation(&self, container: &str) -> bool {
        self.out_of_rotation().insert(container.to_string())
    }

    /// Puts a container back into rotation; false if it was in.
    pub fn return_to_rotation(&self, container: &str) -> bool {
        self.out_of_rotation().remove(container)
    }

    pub fn is_out_of_rotation(&self, container: &str) -> bool {
        self.out_of_rotation().contains(container)
    }

    /// Forgets containers out of rotation that no longer serve.
    pub fn retain_out_of_rotation(&self, serving: &HashSet<String>) {
        self.out_of_rotation().retain(|c| serving.contains(c));
    }

    /// The proxy targets for a set of containers, by replica: those with an
    /// address, without those out of rotation, unless that would leave none (a
    /// replica that fails its checks still beats a 503 for everyone).
    pub fn targets<'a>(&self, rows: impl IntoIterator<Item = &'a ReplicaRow>) -> Vec<Target> {
        let mut rows: Vec<&ReplicaRow> = rows.into_iter().filter(|r| r.addr.is_some()).collect();
        rows.sort_by_key(|r| r.replica);
        let target = |r: &&ReplicaRow| Target {
            addr: r.addr.clone().unwrap_or_default(),
            id: r.container_id.clone(),
        };
        let out_of_rotation = self.out_of_rotation();
        let in_rotation: Vec<Target> = rows
            .iter()
            .filter(|r| !out_of_rotation.contains(&r.container_id))
            .map(target)
            .collect();
        if in_rotation.is_empty() {
            rows.iter().map(target).collect()
        } else {
            in_rotation
        }
    }
}
