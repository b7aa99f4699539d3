//! Starting a program under `mpirun` from Rust (benches and tests that run their MPI part
//! themselves).

use cohort_core::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Finds `mpirun` on `PATH` (or the program named by `COHORT_MPIRUN`).
pub fn find_mpirun() -> Result<PathBuf> {
    let name = std::env::var("COHORT_MPIRUN").unwrap_or_else(|_| "mpirun".into());
    if name.contains('/') {
        let p = PathBuf::from(&name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(missing(&name))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(&name))
        .find(|p| is_executable(p))
        .ok_or_else(|| missing(&name))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn missing(name: &str) -> Error {
    Error::Invalid(format!(
        "`{name}` was not found: install an MPI (OpenMPI: `apt install openmpi-bin libopenmpi-dev`; \
         MPICH: `apt install mpich libmpich-dev`) or set COHORT_MPIRUN to its launcher"
    ))
}

/// `mpirun -np N program`, ready for arguments. OpenMPI is told that root may run it and that
/// more ranks than cores are fine (it stays fast oversubscribed).
pub fn mpirun_command(np: usize, program: impl AsRef<Path>) -> Result<Command> {
    let mut c = Command::new(find_mpirun()?);
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .arg("-np")
        .arg(np.to_string())
        .arg(program.as_ref());
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_mpirun_is_a_clear_error() {
        let e = missing("mpirun").to_string();
        assert!(
            e.starts_with("`mpirun` was not found: install an MPI"),
            "{e}"
        );
        // A launcher named by path that does not exist.
        std::env::set_var("COHORT_MPIRUN", "/nonexistent/bin/mpirun");
        let r = find_mpirun();
        std::env::remove_var("COHORT_MPIRUN");
        assert_eq!(
            r.unwrap_err().to_string(),
            missing("/nonexistent/bin/mpirun").to_string()
        );
    }
}
