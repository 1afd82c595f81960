//! The servers under test as child processes: the hub (its configuration, its start) and nginx
//! (its configuration rendered into the temporary directory), and the wait until each serves.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use fedhub_core::TrustDomain;

use super::client::{HttpResponse, https_get};
use super::{Options, TRUST_DOMAIN};
use crate::pki::ServerPki;
use crate::process::ChildProcess;

/// The hub's configuration: bundle endpoint on `port` with the `https_web` profile, node API on
/// an ephemeral loopback port, no health listener, no OIDC.
fn hub_config(data_dir: &Path, port: u16, cert_file: &Path, key_file: &Path) -> String {
    format!(
        r#"trust_domain = "{TRUST_DOMAIN}"
data_dir = "{data}"

[agent_api]
address = "127.0.0.1:0"

[bundle_endpoint]
address = "127.0.0.1:{port}"
profile = "https_web"
cert_file = "{cert}"
key_file = "{key}"

[health]
enabled = false
"#,
        data = data_dir.display(),
        cert = cert_file.display(),
        key = key_file.display(),
    )
}

pub(super) fn start_hub(
    fedhub: &Path,
    dir: &Path,
    port: u16,
    pki: &ServerPki,
    workers: usize,
) -> anyhow::Result<ChildProcess> {
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        hub_config(&dir.join("hub"), port, &pki.cert_file, &pki.key_file),
    )?;
    ChildProcess::spawn(
        "fedhub hub run",
        Command::new(fedhub)
            .args(["hub", "run", "--config"])
            .arg(&config)
            .env("FEDHUB_LOG", "warn")
            .env("TOKIO_WORKER_THREADS", workers.to_string()),
        dir.join("hub.log"),
    )
}

/// What the nginx configuration needs to know.
#[derive(Debug)]
pub(super) struct NginxConfig<'a> {
    /// Directory for the pid file, logs and temporary files.
    prefix: &'a Path,
    /// Directory holding [`NginxConfig::DOCUMENT`].
    docs: &'a Path,
    port: u16,
    workers: usize,
    cert_file: &'a Path,
    key_file: &'a Path,
    /// Whether nginx runs as root; its workers then stay root so they can read the
    /// temporary directory (0700).
    as_root: bool,
}

impl NginxConfig<'_> {
    /// The file, in `docs`, holding the bundle bytes.
    pub(super) const DOCUMENT: &'static str = "bundle.json";

    /// Renders `nginx.conf`: the document at `/` (and nothing else) as `application/json`
    /// over TLS 1.2 and 1.3, keep-alive without a request limit, no access log.
    fn render(&self) -> String {
        let p = self.prefix.display();
        let mut conf = String::new();
        if self.as_root {
            conf.push_str("user root;\n");
        }
        let _ = write!(
            conf,
            r"worker_processes {workers};
pid {p}/nginx.pid;
error_log {p}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    server_tokens off;
    types {{ }}
    default_type application/json;
    client_body_temp_path {p}/tmp/client_body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000000;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;

    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {docs};

        location = / {{
            try_files /{document} =404;
        }}
        location / {{
            return 404;
        }}
    }}
}}
",
            workers = self.workers,
            port = self.port,
            cert = self.cert_file.display(),
            key = self.key_file.display(),
            docs = self.docs.display(),
            document = Self::DOCUMENT,
        );
        conf
    }
}

pub(super) fn start_nginx(
    nginx: &Path,
    dir: &Path,
    port: u16,
    pki: &ServerPki,
    docs: &Path,
    options: &Options,
) -> anyhow::Result<ChildProcess> {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp"))?;
    let config = NginxConfig {
        prefix: &prefix,
        docs,
        port,
        workers: options.workers,
        cert_file: &pki.cert_file,
        key_file: &pki.key_file,
        as_root: rustix::process::geteuid().is_root(),
    };
    let conf_file = prefix.join("nginx.conf");
    std::fs::write(&conf_file, config.render())?;
    let mut prefix_arg = prefix.clone().into_os_string();
    prefix_arg.push("/");
    ChildProcess::spawn(
        "nginx",
        Command::new(nginx)
            .arg("-p")
            .arg(prefix_arg)
            .arg("-c")
            .arg(&conf_file)
            .args(["-g", "daemon off;"]),
        prefix.join("stderr.log"),
    )
}

/// Waits (at most 30 s) until `server` answers `GET /` with 200; returns that response.
pub(super) fn wait_ready(
    server: &mut ChildProcess,
    port: u16,
    client: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<HttpResponse> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        if !server.is_running()? {
            bail!(
                "{} exited before serving; its stderr:\n{}",
                server.name,
                server.log_tail()
            );
        }
        match https_get(port, client) {
            Ok(response) if response.status == 200 => return Ok(response),
            Ok(response) => last = format!("status {}", response.status),
            Err(error) => last = format!("{error:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{} did not serve GET / on port {port} within 30 s ({last}); its stderr:\n{}",
        server.name,
        server.log_tail()
    )
}

pub(super) fn check_hub_response(response: &HttpResponse) -> anyhow::Result<()> {
    ensure!(
        response.header("content-type") == Some("application/json"),
        "the hub answers with Content-Type {:?}",
        response.header("content-type")
    );
    let etag = response.header("etag").context("the hub sent no ETag")?;
    ensure!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "the hub's ETag {etag:?} is not a strong entity tag"
    );
    let bundle = fedhub_core::Bundle::from_json(TrustDomain::new(TRUST_DOMAIN)?, &response.body)
        .context("the hub's body is not a SPIFFE bundle document")?;
    ensure!(
        !bundle.x509_authorities().is_empty() && bundle.sequence().is_some(),
        "the hub's bundle has no X.509 authority or no spiffe_sequence"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nginx_config(as_root: bool) -> String {
        NginxConfig {
            prefix: Path::new("/tmp/b/nginx"),
            docs: Path::new("/tmp/b/docs"),
            port: 40_123,
            workers: 3,
            cert_file: Path::new("/tmp/b/server.pem"),
            key_file: Path::new("/tmp/b/server.key"),
            as_root,
        }
        .render()
    }

    /// The directive lines of a rendered configuration, whitespace-normalized.
    fn directives(conf: &str) -> Vec<String> {
        conf.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect()
    }

    #[test]
    fn nginx_config_serves_the_document_like_the_hub() {
        let conf = nginx_config(false);
        let lines = directives(&conf);
        for expected in [
            "worker_processes 3;",
            "pid /tmp/b/nginx/nginx.pid;",
            "error_log /tmp/b/nginx/error.log warn;",
            "access_log off;",
            "default_type application/json;",
            "types { }",
            "client_body_temp_path /tmp/b/nginx/tmp/client_body;",
            "proxy_temp_path /tmp/b/nginx/tmp/proxy;",
            "fastcgi_temp_path /tmp/b/nginx/tmp/fastcgi;",
            "uwsgi_temp_path /tmp/b/nginx/tmp/uwsgi;",
            "scgi_temp_path /tmp/b/nginx/tmp/scgi;",
            "keepalive_requests 1000000000;",
            "listen 127.0.0.1:40123 ssl;",
            "ssl_certificate /tmp/b/server.pem;",
            "ssl_certificate_key /tmp/b/server.key;",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "root /tmp/b/docs;",
            "location = / {",
            "try_files /bundle.json =404;",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "missing {expected:?} in:\n{conf}"
            );
        }
        assert!(!lines.iter().any(|l| l.starts_with("user ")), "{conf}");
        // Every path nginx writes to lies under the prefix, never in /var.
        assert!(!conf.contains("/var/"), "{conf}");
        // Balanced braces: the file is one well-formed block structure.
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }

    #[test]
    fn nginx_config_keeps_root_workers_when_run_as_root() {
        let conf = nginx_config(true);
        assert_eq!(
            directives(&conf).first().map(String::as_str),
            Some("user root;")
        );
    }

    #[test]
    fn hub_config_uses_https_web_with_the_generated_files() {
        let text = hub_config(
            Path::new("/tmp/b/hub"),
            40_000,
            Path::new("/tmp/b/server.pem"),
            Path::new("/tmp/b/server.key"),
        );
        let config = fedhub_hub::config::HubConfig::from_toml(&text).unwrap();
        let endpoint = config.bundle_endpoint.as_ref().unwrap();
        assert_eq!(endpoint.address, "127.0.0.1:40000".parse().unwrap());
        assert!(matches!(
            &endpoint.profile,
            fedhub_hub::config::ServingProfile::HttpsWeb { cert_file, key_file }
                if cert_file == Path::new("/tmp/b/server.pem")
                    && key_file == Path::new("/tmp/b/server.key")
        ));
        assert!(config.health_address.is_none());
    }
}
