//! `hookrelay completions SHELL`: a shell completion script on stdout.

use clap_complete::Shell;

/// Writes the completion script for `shell` describing `command` (the binary's whole CLI).
/// Generated into memory first: clap_complete panics when a write fails, and a reader that
/// stops early (`hookrelay completions zsh | head`) is not an error.
pub fn print(shell: Shell, mut command: clap::Command) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "hookrelay", &mut script);
    super::out(&String::from_utf8_lossy(&script));
}
