//! The `cohort` binary: its help, its usage errors, and the environment it gives the program
//! it runs (checked with `sh`, so no cohort program is needed here; tests/ssh_machines.rs runs
//! real cohort programs under it).

use std::process::{Command, Output};

fn cohort(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .env_remove("COHORT_PROCS")
        .output()
        .expect("run cohort")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_documents_every_flag() {
    for flag in ["--help", "-h"] {
        let o = cohort(&[flag]);
        assert!(o.status.success());
        assert_eq!(text(&o.stdout), cohort_launcher::cli::HELP);
    }
    let o = cohort(&["--version"]);
    assert_eq!(
        text(&o.stdout).trim(),
        format!("cohort {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["-p", "lots", "true"],
        &["--topology", "ring", "true"],
        &["--worker-timeout", "-3", "true"],
        &["--no-such-flag", "true"],
        &["--machine-file", "/nonexistent/hosts", "true"],
    ] {
        let o = cohort(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(text(&o.stderr).contains("cohort --help"), "{args:?}");
    }
    let o = cohort(&["/nonexistent/program"]);
    assert_eq!(o.status.code(), Some(127));
}

/// The topology names are core's: an unknown one lists them, each of them is passed on.
#[test]
fn topology_names_are_cores() {
    let o = cohort(&["--topology", "ring", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stderr),
        "cohort: --topology: \"ring\" is not a topology \
         (all_to_all, all_to_all_eager, master_worker or custom)\n\
         Try `cohort --help` for the options.\n"
    );
    for t in cohort_core::Topology::ALL {
        assert!(cohort_launcher::cli::HELP.contains(t.name()), "{t:?}");
        let o = cohort(&["--topology", t.name(), "sh", "-c", "echo $COHORT_TOPOLOGY"]);
        assert!(o.status.success(), "{t:?}: {}", text(&o.stderr));
        assert_eq!(text(&o.stdout).trim(), t.name());
    }
}

#[test]
fn sets_the_environment_and_runs_the_program() {
    let dir = std::env::temp_dir().join(format!("cohort-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "2*node1\nalice@node2:2222 10.0.0.2\n").unwrap();
    let o = cohort(&[
        "-p",
        "3",
        "--worker-timeout",
        "9",
        "--topology",
        "master_worker",
        "--bind-to",
        "0.0.0.0",
        "--machine-file",
        hosts.to_str().unwrap(),
        "--tunnel",
        "--sshflags",
        "-i /k",
        "sh",
        "-c",
        "echo $COHORT_PROCS $COHORT_WORKER_TIMEOUT $COHORT_TOPOLOGY $COHORT_BIND \
         $COHORT_MACHINE_FILE $COHORT_SSH_TUNNEL $COHORT_SSHFLAGS; exit 3",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status.code(), Some(3), "the program's exit status");
    assert_eq!(
        text(&o.stdout).trim(),
        format!("3 9 master_worker 0.0.0.0 {} 1 -i /k", hosts.display())
    );
}

#[test]
fn slurm_flags() {
    let show = "echo $COHORT_SLURM $COHORT_SRUN_FLAGS $COHORT_SLURM_BIND ${COHORT_BIND:-none}";
    // Inside an allocation (as the environment says) the program runs with the variables set;
    // --bind-to names the Slurm workers' address then.
    let o = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args([
            "--slurm",
            "--srun-flags",
            "--cpus-per-task=2 -N2",
            "--bind-to",
            "ib0",
        ])
        .args(["sh", "-c", show])
        .env("SLURM_JOB_ID", "42")
        .env_remove("COHORT_BIND")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), "1 --cpus-per-task=2 -N2 ib0 none");
    // Outside one it says how to get one, and runs nothing.
    let o = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["--slurm", "sh", "-c", "echo ran"])
        .env_remove("SLURM_JOB_ID")
        .env_remove("SLURM_JOBID")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(text(&o.stdout), "");
    assert!(
        text(&o.stderr).starts_with(
            "cohort: --slurm: SlurmManager: this process is not inside a Slurm allocation (SLURM_JOB_ID is not set)"
        ),
        "{}",
        text(&o.stderr)
    );
    for (args, want) in [
        (
            &["--slurm", "-p", "2", "true"][..],
            "without -p and --machine-file",
        ),
        (
            &["--srun-flags", "-N2", "true"][..],
            "applies to --slurm workers",
        ),
        (&["--slurm=yes", "true"][..], "--slurm takes no value"),
        (
            &["--slurm", "--srun-flags"][..],
            "--srun-flags needs a value",
        ),
    ] {
        let o = cohort(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            text(&o.stderr).contains(want),
            "{args:?}: {}",
            text(&o.stderr)
        );
    }
    for f in [
        "--slurm",
        "--srun-flags FLAGS",
        "COHORT_SLURM",
        "COHORT_SRUN_FLAGS",
        "COHORT_SLURM_BIND",
    ] {
        assert!(
            cohort_launcher::cli::HELP.contains(f),
            "--help does not mention {f}"
        );
    }
}
