//! The cluster topologies, by name: one list for `COHORT_TOPOLOGY`, `set_topology` and the
//! `cohort --topology` flag.

use crate::base::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How workers connect to each other.
///
/// # Julia
/// `addprocs(...; topology = :all_to_all | :master_worker | :custom)`, `lazy = true | false`:
/// `AllToAll` is Julia's lazy all-to-all, `AllToAllEager` its `lazy = false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Topology {
    /// `all_to_all`: every process may call every other; worker links open on first use (the
    /// default).
    AllToAll,
    /// `all_to_all_eager`: every process may call every other; each new worker connects to the
    /// others as it joins.
    AllToAllEager,
    /// `master_worker`: only the master and each worker are linked; a worker-to-worker call is
    /// an error naming the topology.
    MasterWorker,
    /// `custom`: a worker connects to the workers named by its `WorkerConfig::connect_idents`
    /// (and those that name it); other worker-to-worker calls are errors. The built-in
    /// managers name none, so with them it links as `master_worker` does.
    Custom,
}

impl Topology {
    /// Every topology, in the order the docs list them.
    pub const ALL: [Topology; 4] = [
        Topology::AllToAll,
        Topology::AllToAllEager,
        Topology::MasterWorker,
        Topology::Custom,
    ];

    /// The name `parse` accepts: `all_to_all`, `all_to_all_eager`, `master_worker`, `custom`.
    pub fn name(self) -> &'static str {
        match self {
            Topology::AllToAll => "all_to_all",
            Topology::AllToAllEager => "all_to_all_eager",
            Topology::MasterWorker => "master_worker",
            Topology::Custom => "custom",
        }
    }

    /// Parses a [`name`](Self::name); anything else is `Error::Invalid` listing the names.
    pub fn parse(s: &str) -> Result<Topology> {
        Topology::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| Error::Invalid(format!("{s:?} is not {}", Topology::accepted())))
    }

    /// What `parse` accepts, for messages: `a topology (all_to_all, ..., master_worker or custom)`.
    pub(crate) fn accepted() -> String {
        let n = Topology::ALL.map(Topology::name);
        format!("a topology ({}, {}, {} or {})", n[0], n[1], n[2], n[3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_lists_them() {
        for t in Topology::ALL {
            assert_eq!(Topology::parse(t.name()).unwrap(), t);
        }
        let e = Topology::parse("ring").unwrap_err();
        assert!(matches!(e, Error::Invalid(_)));
        assert_eq!(
            e.to_string(),
            "\"ring\" is not a topology (all_to_all, all_to_all_eager, master_worker or custom)"
        );
    }
}
