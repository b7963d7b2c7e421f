//! A throwaway certificate authority and a server certificate for `127.0.0.1` and
//! `localhost`, made with the `openssl` command, for LDAPS tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::binary::{self, require_binary};
use crate::error::Result;
use crate::files::write_public;

/// A test CA and one server certificate signed by it (P-256 keys), as PEM files.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate: what clients trust.
    pub ca_cert: PathBuf,
    /// The server certificate, SAN `IP:127.0.0.1, DNS:localhost`.
    pub server_cert: PathBuf,
    /// The server's private key (unencrypted).
    pub server_key: PathBuf,
}

impl TestCa {
    /// Creates the CA and the server certificate in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        let openssl = require_binary("openssl", &["openssl"])?;
        let ca_key = dir.join("ca.key");
        let ca_cert = dir.join("ca.pem");
        let server_key = dir.join("server.key");
        let server_csr = dir.join("server.csr");
        let server_cert = dir.join("server.pem");
        let extensions = dir.join("server.ext");
        write_public(
            &extensions,
            b"subjectAltName = IP:127.0.0.1, DNS:localhost\n\
              basicConstraints = critical, CA:FALSE\n\
              keyUsage = critical, digitalSignature, keyEncipherment\n\
              extendedKeyUsage = serverAuth\n",
        )?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        binary::run(
            Command::new(&openssl)
                .args(["req", "-x509"])
                .args(ec)
                .arg("-keyout")
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca_cert)
                .args([
                    "-days",
                    "3650",
                    "-subj",
                    "/O=otpgate tests/CN=otpgate test CA",
                ])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
            None,
        )?;
        binary::run(
            Command::new(&openssl)
                .arg("req")
                .args(ec)
                .arg("-keyout")
                .arg(&server_key)
                .arg("-out")
                .arg(&server_csr)
                .args(["-subj", "/O=otpgate tests/CN=localhost"]),
            None,
        )?;
        binary::run(
            Command::new(&openssl)
                .args(["x509", "-req", "-in"])
                .arg(&server_csr)
                .arg("-CA")
                .arg(&ca_cert)
                .arg("-CAkey")
                .arg(&ca_key)
                .args(["-CAcreateserial", "-days", "3650", "-out"])
                .arg(&server_cert)
                .arg("-extfile")
                .arg(&extensions),
            None,
        )?;
        Ok(Self {
            ca_cert,
            server_cert,
            server_key,
        })
    }
}
