//! HTTPS: the server with a certificate made here by `openssl`, reached by
//! the CLI (the Rust client) trusting its CA; plain HTTP to the TLS port is
//! told to use https; a client trusting another CA refuses the server; a
//! server requiring client certificates refuses a client without one.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ServerProcess, stderr, stdout};

/// A CA, a server certificate for 127.0.0.1 and localhost, a client
/// certificate (with its key, in one file), and an unrelated CA.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl is installed (scripts/test installs it)");
            assert!(status.success(), "openssl {args:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
            let mut args = vec!["req", "-x509", "-days", "1", "-subj"];
            let subject = format!("/CN={ca}");
            args.extend([subject.as_str(), "-keyout", &key, "-out", &crt]);
            args.extend(ec);
            run(&args);
        }
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        std::fs::copy(
            dir.path().join("server.ext"),
            dir.path().join("server2.ext"),
        )
        .unwrap();
        // `server2` is signed by the other CA: the certificate a rotation
        // brings in.
        let signed = [
            ("server", "/CN=localhost", "ca"),
            ("client", "/CN=worker-1", "ca"),
            ("server2", "/CN=localhost", "other-ca"),
        ];
        for (who, subject, ca) in signed {
            let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
            let (key, csr, crt, ext) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.crt"),
                format!("{who}.ext"),
            );
            let mut args = vec!["req", "-subj", subject, "-keyout", &key, "-out", &csr];
            args.extend(ec);
            run(&args);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ]);
        }
        let identity = [
            std::fs::read_to_string(dir.path().join("client.crt")).unwrap(),
            std::fs::read_to_string(dir.path().join("client.key")).unwrap(),
        ]
        .concat();
        std::fs::write(dir.path().join("client.pem"), identity).unwrap();
        Certificates { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn serve(&self, data: &Path, client_ca: bool) -> ServerProcess {
        let (cert, key) = (self.path("server.crt"), self.path("server.key"));
        self.serve_with(data, client_ca, &cert, &key)
    }

    fn serve_with(&self, data: &Path, client_ca: bool, cert: &Path, key: &Path) -> ServerProcess {
        let ca = self.path("ca.crt");
        let mut args = vec![
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        if client_ca {
            args.extend(["--tls-client-ca", ca.to_str().unwrap()]);
        }
        // Its log (warnings and errors) is read by the reload test.
        let mut command = common::serve_command(data);
        command
            .args(&args)
            .env("RATEKEEPER_LOG", "warn")
            .stderr(std::process::Stdio::piped());
        ServerProcess::spawn(command)
    }
}

fn rk(url: &str, extra: &[&str], args: &[&str]) -> std::process::Output {
    Command::new(common::BIN)
        .args(args)
        .arg("--url")
        .arg(url)
        .args(extra)
        .env_remove("RATEKEEPER_TOKEN")
        .env_remove("RATEKEEPER_CA_CERT")
        .env_remove("RATEKEEPER_CLIENT_CERT")
        .output()
        .unwrap()
}

#[test]
fn https_serves_clients_that_trust_its_ca_and_tells_plain_http_to_use_https() {
    let certs = Certificates::make();
    let data = tempfile::tempdir().unwrap();
    let server = certs.serve(data.path(), false);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let ca = certs.path("ca.crt");
    let trust = ["--ca-cert", ca.to_str().unwrap()];
    let created = rk(
        &server.url,
        &trust,
        &["limit", "create", "db", "--slots", "2"],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    // By name too: the certificate names localhost.
    let by_name = server.url.replace("127.0.0.1", "localhost");
    let listed = rk(&by_name, &trust, &["limit", "ls"]);
    assert!(stdout(&listed).contains("db "), "{}", stderr(&listed));

    // A client that trusts another CA refuses the server.
    let other = certs.path("other-ca.crt");
    let refused = rk(
        &server.url,
        &["--ca-cert", other.to_str().unwrap()],
        &["limit", "ls"],
    );
    assert_eq!(refused.status.code(), Some(69), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("cannot reach"),
        "{}",
        stderr(&refused)
    );

    // Plain HTTP to the TLS port is told what to do.
    let plain = server.url.replace("https://", "http://");
    let answer = Command::new("curl")
        .args(["-s", &format!("{plain}/livez")])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&answer.stdout);
    assert!(
        body.contains("https_required") && body.contains("https://"),
        "{body}"
    );
}

#[test]
fn a_server_requiring_client_certificates_refuses_clients_without_one() {
    let certs = Certificates::make();
    let data = tempfile::tempdir().unwrap();
    let server = certs.serve(data.path(), true);
    let ca = certs.path("ca.crt");
    let trust = ["--ca-cert", ca.to_str().unwrap()];
    let without = rk(&server.url, &trust, &["limit", "ls"]);
    assert_ne!(
        without.status.code(),
        Some(0),
        "served without a client certificate"
    );
    let identity = certs.path("client.pem");
    let mut with = trust.to_vec();
    with.extend(["--client-cert", identity.to_str().unwrap()]);
    let listed = rk(&server.url, &with, &["limit", "ls"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
}

#[test]
fn a_key_that_does_not_fit_or_a_missing_file_is_refused_at_start_naming_the_file() {
    let certs = Certificates::make();
    let data = tempfile::tempdir().unwrap();
    let (cert, wrong_key) = (certs.path("server.crt"), certs.path("client.key"));
    for (cert, key, named) in [
        (cert.clone(), wrong_key.clone(), "client.key"),
        (certs.path("missing.crt"), wrong_key, "missing.crt"),
    ] {
        let output = Command::new(common::BIN)
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let message = stderr(&output);
        assert!(message.contains(named), "{message}");
    }
}

#[test]
fn on_sighup_the_server_takes_a_new_certificate_for_new_connections() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let certs = Certificates::make();
    let data = tempfile::tempdir().unwrap();
    // The server reads its certificate from files a rotation replaces.
    let (cert, key) = (data.path().join("live.crt"), data.path().join("live.key"));
    std::fs::copy(certs.path("server.crt"), &cert).unwrap();
    std::fs::copy(certs.path("server.key"), &key).unwrap();
    let server = certs.serve_with(&data.path().join("store"), false, &cert, &key);
    let (old_ca, new_ca) = (certs.path("ca.crt"), certs.path("other-ca.crt"));
    let with_ca = |ca: &Path| {
        rk(
            &server.url,
            &["--ca-cert", ca.to_str().unwrap()],
            &["limit", "ls"],
        )
    };
    assert!(with_ca(&old_ca).status.success());
    assert!(!with_ca(&new_ca).status.success());

    // A broken file on SIGHUP keeps the certificate in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    kill(Pid::from_raw(server.child.id() as i32), Signal::SIGHUP).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        with_ca(&old_ca).status.success(),
        "the server stopped serving its certificate"
    );

    std::fs::copy(certs.path("server2.crt"), &cert).unwrap();
    std::fs::copy(certs.path("server2.key"), &key).unwrap();
    kill(Pid::from_raw(server.child.id() as i32), Signal::SIGHUP).unwrap();
    let started = std::time::Instant::now();
    while !with_ca(&new_ca).status.success() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never reloaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !with_ca(&old_ca).status.success(),
        "the old certificate is still served"
    );
}
