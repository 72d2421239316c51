//! What a deploy will run, decided when it is requested, and how it splits
//! the serving set.

use super::*;

/// What a deploy will run, decided when it is requested.
#[derive(Clone)]
pub(super) struct Plan {
    /// Run exactly this digest (restart, rollback, config), or pull the
    /// deploy's image by tag and pin what the registry gives.
    pub(super) digest: Option<String>,
    /// Restart in place instead of swapping.
    pub(super) hard: bool,
    /// On success, make the deploy's environment the App's (rollback
    /// `--with-config`).
    pub(super) restore_env: bool,
    /// How the serving set is replaced; `begin` chooses it from the App's
    /// strategy and the host's room unless it is given.
    pub(super) strategy: Option<Strategy>,
    /// How many containers the deploy runs when done; 0 until `begin`
    /// fills in the App's replicas (a scale gives its new count).
    pub(super) replicas: u32,
    /// Only these replicas get new containers and the other serving ones
    /// are kept (autoheal replacing one, a scale: none); `None` replaces all.
    pub(super) only: Option<Vec<u32>>,
    /// The App's new settings (`apps update`): the deploy runs with them
    /// and the App takes them when the swap is recorded.
    pub(super) settings: Option<crate::store::AppSettings>,
}

impl Plan {
    /// The strategy's stable name, as stored with the deploy.
    pub(super) fn strategy_name(&self) -> &'static str {
        match self.strategy {
            _ if self.hard => "in_place",
            Some(Strategy::Rolling) => "rolling",
            Some(Strategy::Recreate) => "recreate",
            _ => "bluegreen",
        }
    }

    pub(super) fn new(digest: Option<String>) -> Self {
        Self {
            digest,
            hard: false,
            restore_env: false,
            strategy: None,
            replicas: 0,
            only: None,
            settings: None,
        }
    }
}

/// How a deploy changes the serving set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    /// Serving containers that stay as they are.
    pub(super) keep: Vec<ReplicaRow>,
    /// Replicas that get a new container.
    pub(super) start: Vec<u32>,
    /// Serving containers that go once their replacement (if any) serves.
    pub(super) retire: Vec<ReplicaRow>,
}

/// Splits the serving set for a deploy to `replicas` containers where only
/// the replicas in `only` (all when `None`) are replaced: replicas beyond the
/// count retire, missing ones are started.
pub(super) fn layout(serving: &[ReplicaRow], replicas: u32, only: Option<&[u32]>) -> Layout {
    let (retire, keep): (Vec<ReplicaRow>, Vec<ReplicaRow>) = serving
        .iter()
        .cloned()
        .partition(|row| row.replica >= replicas || only.is_none_or(|o| o.contains(&row.replica)));
    let start = (0..replicas)
        .filter(|i| !keep.iter().any(|k| k.replica == *i))
        .collect();
    Layout {
        keep,
        start,
        retire,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(replica: u32) -> ReplicaRow {
        ReplicaRow {
            deploy_id: "old".into(),
            replica,
            container_id: format!("c{replica}"),
            container_name: format!("molt-web-old-{replica}"),
            addr: Some(format!("10.0.0.{replica}:80")),
        }
    }

    #[test]
    fn a_deploy_replaces_every_replica() {
        let serving = vec![row(0), row(1), row(2)];
        let l = layout(&serving, 3, None);
        assert!(l.keep.is_empty());
        assert_eq!(l.start, vec![0, 1, 2]);
        assert_eq!(l.retire, serving);
        // The first deploy has nothing to retire.
        let l = layout(&[], 2, None);
        assert_eq!((l.start, l.retire.len()), (vec![0, 1], 0));
    }

    #[test]
    fn a_scale_keeps_the_serving_replicas() {
        let serving = vec![row(0), row(1)];
        let up = layout(&serving, 4, Some(&[]));
        assert_eq!(up.keep, serving);
        assert_eq!(up.start, vec![2, 3]);
        assert!(up.retire.is_empty());
        let down = layout(&serving, 1, Some(&[]));
        assert_eq!(down.keep, vec![row(0)]);
        assert!(down.start.is_empty());
        assert_eq!(down.retire, vec![row(1)]);
    }

    #[test]
    fn one_replica_is_replaced_beside_the_others() {
        let serving = vec![row(0), row(1), row(2)];
        let l = layout(&serving, 3, Some(&[1]));
        assert_eq!(l.keep, vec![row(0), row(2)]);
        assert_eq!(l.start, vec![1]);
        assert_eq!(l.retire, vec![row(1)]);
    }

    #[test]
    fn names_and_descriptions() {
        assert_eq!(container_name("web", "d1", 0), "molt-web-d1");
        assert_eq!(container_name("web", "d1", 2), "molt-web-d1-2");
        assert_eq!(describe_replicas(&[row(1), row(2)]), "replicas 1, 2");
        assert_eq!(describe_containers(&[row(1)]), "container c1");
        assert_eq!(on_replicas(1), "");
        assert_eq!(on_replicas(3), " on 3 replicas");
    }
}
