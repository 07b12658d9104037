//! `warden check-config FILE`: every problem with its key path; non-zero exit if any.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, ProcessEnv, Secrets};

pub fn run(file: &Path) -> anyhow::Result<ExitCode> {
    let config = match Config::from_file(file) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("{}: {} problem(s):", file.display(), problems.len());
            for problem in problems.iter() {
                let path = if problem.path.is_empty() {
                    "(file)"
                } else {
                    &problem.path
                };
                eprintln!("  {path}: {}", problem.message);
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    // The file itself is valid. What this environment lacks is reported as warnings:
    // the file may be checked on a machine other than the one that will serve it.
    let (_, env_problems, warnings) = Secrets::load(&config, &ProcessEnv);
    for problem in env_problems.iter() {
        eprintln!(
            "warning: {}: {} (in this environment)",
            problem.path, problem.message
        );
    }
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "{}: OK ({} key(s) declared)",
        file.display(),
        config.keys.len()
    );
    Ok(ExitCode::SUCCESS)
}
