//! `hookrelay completions SHELL`: a shell completion script on stdout.

use clap_complete::Shell;

/// Writes the completion script for `shell` describing `command` (the binary's whole CLI).
pub fn print(shell: Shell, mut command: clap::Command) {
    clap_complete::generate(shell, &mut command, "hookrelay", &mut std::io::stdout());
}
