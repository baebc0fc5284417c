//! How a proxy or a controller reaches an etcd cluster that asks for more than plain HTTP: TLS
//! to its members (`https://` endpoints, the CA that signed their certificates, and a client
//! certificate where they demand one, as `--client-cert-auth` does) and etcd's own users (a
//! name, with its password read from a file so that it shows in no process list).
//!
//! Both binaries take the same flags (`--etcd-ca`, `--etcd-cert`, `--etcd-key`, `--etcd-user`,
//! `--etcd-password-file`), check them here, every problem at once, and hand the files' contents
//! to their etcd client.
//!
//! ```
//! use switchyard_config::etcd_access::EtcdAccess;
//!
//! let plain = EtcdAccess::default().load(&["http://127.0.0.1:2379".to_owned()]).unwrap();
//! assert!(plain.ca.is_none() && plain.user.is_none());
//!
//! let problems = EtcdAccess::default().load(&["https://etcd:2379".to_owned()]).unwrap_err();
//! assert!(problems[0].starts_with("--etcd-ca: the etcd endpoints are https://"));
//! ```

use std::path::{Path, PathBuf};

/// The flags, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct EtcdAccess {
    /// The CA certificate (PEM) that signed the etcd members' certificates, for https://
    /// endpoints.
    #[cfg_attr(
        feature = "cli",
        arg(long = "etcd-ca", env = "SWITCHYARD_ETCD_CA", value_name = "FILE")
    )]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd members that ask for one (--client-cert-auth).
    #[cfg_attr(
        feature = "cli",
        arg(long = "etcd-cert", env = "SWITCHYARD_ETCD_CERT", value_name = "FILE")
    )]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[cfg_attr(
        feature = "cli",
        arg(long = "etcd-key", env = "SWITCHYARD_ETCD_KEY", value_name = "FILE")
    )]
    pub key: Option<PathBuf>,
    /// The etcd user to authenticate as (etcd's auth enabled).
    #[cfg_attr(
        feature = "cli",
        arg(long = "etcd-user", env = "SWITCHYARD_ETCD_USER", value_name = "NAME")
    )]
    pub user: Option<String>,
    /// A file holding the etcd user's password (a trailing newline is not part of it).
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "etcd-password-file",
            env = "SWITCHYARD_ETCD_PASSWORD_FILE",
            value_name = "FILE"
        )
    )]
    pub password_file: Option<PathBuf>,
}

/// What [`EtcdAccess`] names, read and checked.
#[derive(Clone, Default)]
pub struct EtcdCredentials {
    /// The CA certificate (PEM); set for `https://` endpoints.
    pub ca: Option<Vec<u8>>,
    /// The client certificate and its key (PEM).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The user and its password.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCredentials")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .finish()
    }
}

impl EtcdAccess {
    /// Checks the flags against `endpoints` and reads their files. Every problem is a sentence
    /// that starts with the flag it is about.
    pub fn load(&self, endpoints: &[String]) -> Result<EtcdCredentials, Vec<String>> {
        let mut problems = Vec::new();
        let https = endpoints.iter().filter(|e| e.starts_with("https://")).count();
        let tls = if https == 0 {
            for (flag, given) in [
                ("--etcd-ca", &self.ca),
                ("--etcd-cert", &self.cert),
                ("--etcd-key", &self.key),
            ] {
                if given.is_some() {
                    problems.push(format!(
                        "{flag}: TLS is for https:// endpoints, and these are not: {}; write them as https://HOST:PORT, or leave the flag out",
                        endpoints.join(",")
                    ));
                }
            }
            false
        } else {
            if https < endpoints.len() {
                problems.push(format!(
                    "--etcd: the endpoints mix http:// and https://: {}; a cluster's members are reached one way, so give one scheme",
                    endpoints.join(",")
                ));
            }
            if self.ca.is_none() {
                problems.push(
                    "--etcd-ca: the etcd endpoints are https://, so give the CA certificate (PEM) that signed the members' certificates"
                        .to_owned(),
                );
            }
            true
        };
        let ca = if tls {
            self.ca
                .as_deref()
                .and_then(|p| pem(&mut problems, "--etcd-ca", p, "CERTIFICATE"))
        } else {
            None
        };
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) if tls => {
                let cert = pem(&mut problems, "--etcd-cert", cert, "CERTIFICATE");
                let key = pem(&mut problems, "--etcd-key", key, "PRIVATE KEY");
                cert.zip(key)
            }
            (Some(_), None) => {
                problems
                    .push("--etcd-key: --etcd-cert needs the certificate's private key, --etcd-key FILE".to_owned());
                None
            }
            (None, Some(_)) => {
                problems.push("--etcd-cert: --etcd-key needs its certificate, --etcd-cert FILE".to_owned());
                None
            }
            _ => None,
        };
        let user = match (&self.user, &self.password_file) {
            (Some(user), Some(file)) => {
                if user.is_empty() {
                    problems.push("--etcd-user: the user name is empty".to_owned());
                }
                match std::fs::read_to_string(file) {
                    Ok(text) => {
                        let password = text.strip_suffix('\n').unwrap_or(&text);
                        let password = password.strip_suffix('\r').unwrap_or(password);
                        if password.is_empty() {
                            problems.push(format!("--etcd-password-file: {} is empty", file.display()));
                        }
                        Some((user.clone(), password.to_owned()))
                    }
                    Err(e) => {
                        problems.push(format!("--etcd-password-file: cannot read {}: {e}", file.display()));
                        None
                    }
                }
            }
            (Some(_), None) => {
                problems.push(
                    "--etcd-password-file: --etcd-user needs the user's password, in a file (--etcd-password-file FILE)"
                        .to_owned(),
                );
                None
            }
            (None, Some(_)) => {
                problems.push("--etcd-user: --etcd-password-file needs the user it is the password of".to_owned());
                None
            }
            (None, None) => None,
        };
        if problems.is_empty() {
            Ok(EtcdCredentials { ca, identity, user })
        } else {
            Err(problems)
        }
    }
}

/// The PEM file `path`, which must hold a block whose label ends with `label`.
fn pem(problems: &mut Vec<String>, flag: &str, path: &Path, label: &str) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let holds = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
                .any(|found| found.ends_with(label));
            if holds {
                Some(bytes)
            } else {
                problems.push(format!(
                    "{flag}: {} holds no PEM {label} (a -----BEGIN {label}----- block)",
                    path.display()
                ));
                None
            }
        }
        Err(e) => {
            problems.push(format!("{flag}: cannot read {}: {e}", path.display()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-etcd-access-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn tls_and_a_user_are_read_from_their_files() {
        let d = dir("read");
        let access = EtcdAccess {
            ca: Some(file(&d, "ca.pem", CERT)),
            cert: Some(file(&d, "cert.pem", CERT)),
            key: Some(file(&d, "key.pem", KEY)),
            user: Some("switchyard".to_owned()),
            password_file: Some(file(&d, "password", "s3cret\n")),
        };
        let credentials = access
            .load(&["https://a:2379".to_owned(), "https://b:2379".to_owned()])
            .unwrap();
        assert_eq!(credentials.ca.as_deref(), Some(CERT.as_bytes()));
        assert_eq!(credentials.identity, Some((CERT.into(), KEY.into())));
        assert_eq!(credentials.user, Some(("switchyard".to_owned(), "s3cret".to_owned())));
        assert!(
            !format!("{credentials:?}").contains("s3cret"),
            "the password is never printed"
        );
    }

    #[test]
    fn every_problem_is_named_by_its_flag() {
        let d = dir("problems");
        let access = EtcdAccess {
            ca: Some(file(&d, "ca.pem", KEY)),
            cert: Some(d.join("missing.pem")),
            key: None,
            user: Some("switchyard".to_owned()),
            password_file: Some(file(&d, "empty", "\n")),
        };
        let problems = access
            .load(&["https://a:2379".to_owned(), "http://b:2379".to_owned()])
            .unwrap_err();
        let flags: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            flags,
            ["--etcd", "--etcd-ca", "--etcd-key", "--etcd-password-file"],
            "{problems:#?}"
        );
        assert!(problems[1].contains("holds no PEM CERTIFICATE"), "{}", problems[1]);

        let plain = EtcdAccess {
            ca: Some(file(&d, "ca2.pem", CERT)),
            user: Some("switchyard".to_owned()),
            ..EtcdAccess::default()
        };
        let problems = plain.load(&["http://a:2379".to_owned()]).unwrap_err();
        assert!(
            problems[0].starts_with("--etcd-ca: TLS is for https:// endpoints"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("--etcd-password-file: --etcd-user needs"),
            "{problems:#?}"
        );
    }
}
