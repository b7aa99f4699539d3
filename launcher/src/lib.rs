//! cohort-launcher: cluster managers that start workers, and the `cohort` command.
//!
//! - [`LocalManager`] — workers on this host, by re-executing the current program in worker
//!   mode (Julia's `addprocs(n)`).
//! - [`SshManager`] — workers on other hosts through ssh (Julia's `addprocs(machines)`), with
//!   [`machines`] for machine specs and machine files.
//! - [`SlurmManager`] — workers as the tasks of one `srun` job step inside a Slurm
//!   allocation (SlurmClusterManager.jl's `SlurmManager`).
//! - [`cli`] — the `cohort` command (`cohort -p 4 prog`, `cohort --machine-file hosts prog`).

pub mod cli;
mod local;
pub mod machines;
pub mod mpirun;
mod output;
pub mod slurm;
pub mod ssh;

pub use local::LocalManager;
pub use machines::{parse_machine_file, parse_machines, read_machine_file, Machine, SpecError};
pub use slurm::{addprocs_slurm, Allocation, SlurmManager, SlurmOptions};
pub use ssh::{addprocs_machine_file, addprocs_machines, IntoMachine, SshManager, SshOptions};
