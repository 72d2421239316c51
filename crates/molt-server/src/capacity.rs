//! What the host offers Apps (memory, GPUs) and what a deploy may use. An
//! App's `--memory` and `--gpus` are reserved against the host for each of
//! its replicas. A deploy that cannot hold the old and the new set at once
//! rolls one replica at a time (it needs room for one container more), and
//! becomes a recreate when even that does not fit.

use crate::store::AppRow;

/// The host's resources, declared with `molt server --memory/--gpus` or
/// detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub memory_bytes: u64,
    pub gpus: u32,
}

/// How a deploy replaces the serving version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The whole new set beside the old one, then an atomic swap.
    BlueGreen,
    /// One replica at a time: a new one beside the old set, swapped for one
    /// old one, repeated.
    Rolling,
    /// Old stopped first (requests held), then the new one started.
    Recreate,
}

/// What one container of an App reserves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    pub memory_bytes: u64,
    pub gpus: u32,
}

impl Need {
    pub fn of(app: &AppRow) -> Self {
        Self {
            memory_bytes: app.memory_bytes.unwrap_or(0),
            gpus: app.gpus,
        }
    }

    fn plus(self, other: Need) -> Need {
        Need {
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            gpus: self.gpus.saturating_add(other.gpus),
        }
    }

    fn minus(self, other: Need) -> Need {
        Need {
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }

    /// What `n` containers of this need reserve.
    pub fn times(self, n: u32) -> Need {
        Need {
            memory_bytes: self.memory_bytes.saturating_mul(n as u64),
            gpus: self.gpus.saturating_mul(n),
        }
    }

    /// Whether what is reserved already (`self`) leaves room for `more`. A
    /// resource `more` does not ask for never stands in its way: on a host
    /// whose Apps reserve more than it offers (say after a smaller
    /// `molt server --memory`), Apps that reserve none of it still deploy.
    fn has_room_for(self, more: Need, capacity: Capacity) -> bool {
        (more.memory_bytes == 0
            || self.memory_bytes.saturating_add(more.memory_bytes) <= capacity.memory_bytes)
            && (more.gpus == 0 || self.gpus.saturating_add(more.gpus) <= capacity.gpus)
    }
}

/// Chooses how to deploy `app` (its `replicas` containers): `in_use` is what
/// every serving container of the installation reserves, this App's included
/// (`serving` says whether it has a serving set). Errors when even a recreate
/// cannot fit.
pub fn choose(
    app: &AppRow,
    serving: bool,
    in_use: Need,
    capacity: Capacity,
) -> Result<Strategy, String> {
    choose_change(serving.then_some(app), app, in_use, capacity)
}

/// Chooses how `new` replaces the serving set of `old` (`None`: nothing
/// serves yet). They differ when a settings change moves the memory, GPUs
/// or replica count, so the old set is counted with the old settings.
pub fn choose_change(
    old: Option<&AppRow>,
    new: &AppRow,
    in_use: Need,
    capacity: Capacity,
) -> Result<Strategy, String> {
    let one = Need::of(new);
    let n = new.replicas.max(1);
    let set = one.times(n);
    let (old_one, old_set) = match old {
        Some(o) => (Need::of(o), Need::of(o).times(o.replicas.max(1))),
        None => (Need::default(), Need::default()),
    };
    let others = in_use.minus(old_set);
    // Only what grows must find room: a resource the new set reserves no
    // more of than the one it replaces takes only what the App holds
    // already (at worst through a recreate), even on a host whose Apps
    // reserve more than it now offers.
    let grows = |new: u64, old: u64| if new <= old { 0 } else { new };
    let growing = match old {
        Some(_) => Need {
            memory_bytes: grows(set.memory_bytes, old_set.memory_bytes),
            gpus: u32::try_from(grows(u64::from(set.gpus), u64::from(old_set.gpus)))
                .unwrap_or(u32::MAX),
        },
        None => set,
    };
    if !others.has_room_for(growing, capacity) {
        let per_container = Need {
            memory_bytes: if growing.memory_bytes == 0 {
                0
            } else {
                one.memory_bytes
            },
            gpus: if growing.gpus == 0 { 0 } else { one.gpus },
        };
        return Err(cannot_hold(new, per_container, n, others, capacity));
    }
    if old.is_none() {
        return Ok(Strategy::BlueGreen);
    }
    let both_fit = others.plus(old_set).has_room_for(set, capacity);
    // A roll holds the old set and one new container at first, and one old
    // container and the new set at its end (the peak is at either end).
    let one_more_fits = others.plus(old_set).has_room_for(one, capacity)
        && others.plus(old_one).has_room_for(set, capacity);
    Ok(match new.strategy.as_str() {
        "recreate" => Strategy::Recreate,
        // With one replica, one at a time is the blue-green swap.
        "rolling" if n > 1 => Strategy::Rolling,
        "auto" if both_fit => Strategy::BlueGreen,
        "auto" if n > 1 && one_more_fits => Strategy::Rolling,
        "auto" => Strategy::Recreate,
        _ => Strategy::BlueGreen,
    })
}

/// Checks that `containers` containers of `app` fit, where `in_use` counts
/// the App's serving set at its current `replicas` (a scale, or a replica
/// replaced beside the others).
pub fn fits(app: &AppRow, containers: u32, in_use: Need, capacity: Capacity) -> Result<(), String> {
    let one = Need::of(app);
    let others = in_use.minus(one.times(app.replicas));
    if containers <= app.replicas || others.has_room_for(one.times(containers), capacity) {
        Ok(())
    } else {
        Err(cannot_hold(app, one, containers, others, capacity))
    }
}

/// Why `containers` containers of `app`, each reserving `need`, do not fit
/// beside what `others` reserve, naming only what runs short, and what to
/// do about it.
fn cannot_hold(
    app: &AppRow,
    need: Need,
    containers: u32,
    others: Need,
    capacity: Capacity,
) -> String {
    let set = need.times(containers);
    let per = if containers > 1 {
        format!(" ({containers} containers)")
    } else {
        String::new()
    };
    let mut short = Vec::new();
    let mut fixes = Vec::new();
    let mut declare = Vec::new();
    // What the App does not ask for is never what runs short, even on a
    // host whose other Apps reserve more than it now offers.
    if need.memory_bytes > 0
        && others.memory_bytes.saturating_add(set.memory_bytes) > capacity.memory_bytes
    {
        short.push(format!(
            "it needs {} of memory{per}, and {} of the {} the host offers Apps is free ({} reserved by other Apps)",
            human_bytes(set.memory_bytes),
            human_bytes(capacity.memory_bytes.saturating_sub(others.memory_bytes)),
            human_bytes(capacity.memory_bytes),
            human_bytes(others.memory_bytes),
        ));
        fixes.push("a smaller --memory");
        declare.push("--memory SIZE");
    }
    if need.gpus > 0 && others.gpus.saturating_add(set.gpus) > capacity.gpus {
        short.push(format!(
            "it needs {} GPU(s){per}, and {} of the {} GPU(s) the host offers Apps are free ({} reserved by other Apps)",
            set.gpus,
            capacity.gpus.saturating_sub(others.gpus),
            capacity.gpus,
            others.gpus,
        ));
        fixes.push("fewer --gpus");
        declare.push("--gpus N");
    }
    if containers > 1 {
        fixes.push("fewer replicas");
    }
    format!(
        "the host cannot hold the App `{}`: {}. Ask for {}, make room (scale down or delete other Apps), or, if the host has more than Molt counts, say so with `molt server {}`",
        app.name,
        short.join("; "),
        fixes.join(" or "),
        declare.join(" ")
    )
}

/// GPUs the host has, from the NVIDIA driver's view of the machine (no
/// driver: none).
pub fn detect_gpus() -> u32 {
    std::fs::read_dir("/proc/driver/nvidia/gpus")
        .map(|d| d.flatten().count() as u32)
        .unwrap_or(0)
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if b >= size {
            let v = b as f64 / size as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{b} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(memory_mb: u64, gpus: u32, strategy: &str) -> AppRow {
        AppRow {
            status: molt_core::AppStatus::Running,
            image: "x".into(),
            port: 80,
            strategy: strategy.into(),
            memory_bytes: (memory_mb > 0).then_some(memory_mb << 20),
            gpus,
            ..AppRow::named("gpu")
        }
    }

    const HOST: Capacity = Capacity {
        memory_bytes: 1 << 30,
        gpus: 1,
    };

    #[test]
    fn blue_green_when_both_fit() {
        let a = app(256, 0, "auto");
        let used = Need {
            memory_bytes: 256 << 20,
            gpus: 0,
        };
        assert_eq!(choose(&a, true, used, HOST), Ok(Strategy::BlueGreen));
    }

    #[test]
    fn recreate_when_old_and_new_do_not_fit() {
        let a = app(0, 1, "auto");
        let used = Need {
            memory_bytes: 0,
            gpus: 1,
        };
        assert_eq!(choose(&a, true, used, HOST), Ok(Strategy::Recreate));
        let a = app(600, 0, "auto");
        let used = Need {
            memory_bytes: 600 << 20,
            gpus: 0,
        };
        assert_eq!(choose(&a, true, used, HOST), Ok(Strategy::Recreate));
    }

    #[test]
    fn first_deploy_is_never_a_recreate() {
        let a = app(0, 1, "recreate");
        assert_eq!(
            choose(&a, false, Need::default(), HOST),
            Ok(Strategy::BlueGreen)
        );
    }

    #[test]
    fn explicit_strategies() {
        assert_eq!(
            choose(&app(0, 0, "recreate"), true, Need::default(), HOST),
            Ok(Strategy::Recreate)
        );
        assert_eq!(
            choose(&app(0, 0, "bluegreen"), true, Need::default(), HOST),
            Ok(Strategy::BlueGreen)
        );
    }

    fn replicas(mut a: AppRow, n: u32) -> AppRow {
        a.replicas = n;
        a
    }

    #[test]
    fn replicas_roll_when_two_sets_do_not_fit() {
        // 3 x 256 MiB serve on a 1 GiB host: 6 do not fit, 4 do.
        let a = replicas(app(256, 0, "auto"), 3);
        let used = Need {
            memory_bytes: 768 << 20,
            gpus: 0,
        };
        assert_eq!(choose(&a, true, used, HOST), Ok(Strategy::Rolling));
        // 2 x 128 MiB: both sets fit, so blue-green.
        let a = replicas(app(128, 0, "auto"), 2);
        let used = Need {
            memory_bytes: 256 << 20,
            gpus: 0,
        };
        assert_eq!(choose(&a, true, used, HOST), Ok(Strategy::BlueGreen));
        // Not even one more fits: recreate.
        let a = replicas(app(512, 0, "auto"), 2);
        let used = Need {
            memory_bytes: 1 << 30,
            gpus: 0,
        };
        assert_eq!(choose(&a, true, used, HOST), Ok(Strategy::Recreate));
        // Asked for: rolling with several replicas, blue-green with one.
        let a = replicas(app(0, 0, "rolling"), 3);
        assert_eq!(
            choose(&a, true, Need::default(), HOST),
            Ok(Strategy::Rolling)
        );
        let a = app(0, 0, "rolling");
        assert_eq!(
            choose(&a, true, Need::default(), HOST),
            Ok(Strategy::BlueGreen)
        );
    }

    #[test]
    fn every_replica_reserves() {
        let a = replicas(app(512, 0, "auto"), 3);
        let e = choose(&a, false, Need::default(), HOST).unwrap_err();
        assert!(e.contains("1.5 GiB of memory (3 containers)"), "{e}");
        assert!(e.contains("fewer replicas"), "{e}");
        let a = replicas(app(256, 0, "auto"), 2);
        let used = Need {
            memory_bytes: 512 << 20,
            gpus: 0,
        };
        assert_eq!(fits(&a, 4, used, HOST), Ok(()));
        assert!(fits(&a, 5, used, HOST).is_err());
    }

    #[test]
    fn refuses_what_never_fits() {
        let a = app(0, 2, "auto");
        let e = choose(&a, false, Need::default(), HOST).unwrap_err();
        assert!(e.contains("cannot hold"), "{e}");
        // Only what runs short is named (no "needs 0 bytes"), with what to do.
        assert!(
            e.contains("it needs 2 GPU(s), and 1 of the 1 GPU(s)"),
            "{e}"
        );
        assert!(!e.contains("memory"), "{e}");
        assert!(e.contains("`molt server --gpus N`"), "{e}");
        assert!(e.contains("Ask for fewer --gpus"), "{e}");
        let a = app(512, 0, "auto");
        let used_by_others = Need {
            memory_bytes: 768 << 20,
            gpus: 0,
        };
        assert!(choose(&a, false, used_by_others, HOST).is_err());
    }

    #[test]
    fn an_over_reserved_host_still_deploys_what_does_not_grow() {
        // The Apps reserve 14 GiB of a host that now offers 1 GiB.
        let others = Need {
            memory_bytes: 14 << 30,
            gpus: 0,
        };
        // An App that reserves no memory is not in the way of anyone.
        let free = app(0, 0, "auto");
        assert_eq!(choose(&free, false, others, HOST), Ok(Strategy::BlueGreen));
        assert_eq!(choose(&free, true, others, HOST), Ok(Strategy::BlueGreen));
        assert_eq!(fits(&replicas(free, 3), 4, others, HOST), Ok(()));
        // One that reserves some is replaced as a recreate, never refused:
        // it takes no more than it holds.
        let big = app(512, 0, "auto");
        let with_it = others.plus(Need::of(&big));
        assert_eq!(choose(&big, true, with_it, HOST), Ok(Strategy::Recreate));
        // But it cannot grow, and a new App cannot reserve any.
        assert!(fits(&replicas(big.clone(), 1), 2, with_it, HOST).is_err());
        let e = choose(&big, false, others, HOST).unwrap_err();
        assert!(
            e.contains("it needs 512 MiB of memory, and 0 bytes of the 1 GiB the host offers Apps is free (14 GiB reserved by other Apps)"),
            "{e}"
        );
        // A change that grows one resource is checked for that one only.
        let with_gpu = app(512, 1, "auto");
        assert_eq!(
            choose_change(Some(&big), &with_gpu, with_it, HOST),
            Ok(Strategy::Recreate)
        );
        let e = choose_change(Some(&big), &app(512, 2, "auto"), with_it, HOST).unwrap_err();
        assert!(e.contains("it needs 2 GPU(s)"), "{e}");
        assert!(!e.contains("memory"), "{e}");
    }

    #[test]
    fn a_refusal_names_only_what_is_short_and_what_to_do() {
        let e = choose(&app(0, 2, "auto"), false, Need::default(), HOST).unwrap_err();
        assert!(e.contains("it needs 2 GPU(s)"), "{e}");
        assert!(!e.contains("of memory"), "{e}");
        assert!(e.contains("molt server"), "{e}");
        // Other Apps reserving more memory than the host now offers are not
        // what stops an App that asks for none.
        let over = Need {
            memory_bytes: 14 << 30,
            gpus: 0,
        };
        let e = choose(&app(0, 2, "auto"), false, over, HOST).unwrap_err();
        assert!(!e.contains("memory"), "{e}");
        let e = choose(
            &replicas(app(512, 0, "auto"), 3),
            false,
            Need::default(),
            HOST,
        )
        .unwrap_err();
        assert!(e.contains("1.5 GiB of memory (3 containers)"), "{e}");
        assert!(!e.contains("GPU"), "{e}");
    }

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
    }
}
