//! `hookrelay healthcheck`: one GET to the admin listener's `/readyz` (or `/healthz` with
//! `--live`); exit 0 on a 2xx, 1 on anything else. Container images carry no curl, so this is
//! what a Docker `HEALTHCHECK` or an exec probe runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{Config, parse_duration};

#[derive(clap::Args)]
pub struct HealthcheckArgs {
    /// Base URL of the admin listener, e.g. http://127.0.0.1:7701. Default: from the
    /// configuration's `admin.listen` (an unspecified address such as 0.0.0.0 means loopback).
    #[arg(long, env = "HOOKRELAY_ADMIN_URL")]
    admin_url: Option<String>,
    /// Probe liveness (`/healthz`) instead of readiness (`/readyz`).
    #[arg(long)]
    live: bool,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    timeout: Duration,
    /// The configuration to read `admin.listen` from when no --admin-url is given.
    #[arg(long, short = 'c', env = "HOOKRELAY_CONFIG")]
    config: Option<PathBuf>,
}

pub fn run(args: HealthcheckArgs) -> ExitCode {
    let base = match args.admin_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => match Config::load(args.config.as_deref()) {
            Ok(c) => base_url(c.admin.listen),
            Err(e) => {
                eprintln!("hookrelay healthcheck: invalid configuration: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let url = format!("{base}{}", if args.live { "/healthz" } else { "/readyz" });
    match probe(&url, args.timeout) {
        Ok((status, _)) if status.is_success() => {
            crate::cli::out(&format!("{url}: {status}\n"));
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("{url}: {status} {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The URL that reaches a listener bound to `listen` from the same host: a listener on the
/// unspecified address (0.0.0.0 or ::) is reached through loopback.
pub fn base_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

fn probe(url: &str, timeout: Duration) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // No proxy: a container's HTTP_PROXY must not route a loopback probe elsewhere.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()?;
        let resp = client.get(url).send().await?;
        let status = resp.status();
        Ok((status, resp.text().await.unwrap_or_default()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_probed_on_loopback() {
        let cases = [
            ("0.0.0.0:7701", "http://127.0.0.1:7701"),
            ("[::]:7701", "http://[::1]:7701"),
            ("127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("10.1.2.3:7701", "http://10.1.2.3:7701"),
        ];
        for (listen, url) in cases {
            assert_eq!(base_url(listen.parse().unwrap()), url, "{listen}");
        }
    }
}
