//! Puts the build's git commit into `HOOKRELAY_GIT_COMMIT` for `hookrelay --version`.
//!
//! Order: the `HOOKRELAY_GIT_COMMIT` build environment variable (a container build has no `.git`
//! but can pass the commit as a build argument), then `git rev-parse --short HEAD`, then "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HOOKRELAY_GIT_COMMIT");
    let commit = std::env::var("HOOKRELAY_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            watch_git_head();
            git(&["rev-parse", "--short", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=HOOKRELAY_GIT_COMMIT={}", commit.trim());
}

/// Reruns this script when HEAD moves: HEAD itself, the branch it points to, and packed-refs.
/// `--git-path` resolves them correctly in linked worktrees too. Only existing files are named,
/// because cargo reruns on every build for a path that does not exist.
fn watch_git_head() {
    let mut paths = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        paths.push(branch);
    }
    for p in paths {
        if let Some(file) = git(&["rev-parse", "--git-path", &p])
            && std::path::Path::new(&file).exists()
        {
            println!("cargo:rerun-if-changed={file}");
        }
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}
