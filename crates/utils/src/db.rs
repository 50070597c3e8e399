//! Connecting to PostgreSQL with credentials from AWS Secrets Manager or a local URL.
//!
//! TLS: the connection uses TLS whenever the server offers it (`sslmode=prefer`, the default),
//! and insists on it with `sslmode=require`. As in libpq, `require` encrypts without checking
//! the server's certificate unless a root certificate is given (`sslrootcert` in the secret, or
//! `DB_SSL_ROOT_CERT`: a PEM file such as the RDS global bundle), in which case the certificate
//! chain and host name are verified.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Where a Lambda finds its database. Debug output never shows a password.
#[derive(Clone)]
pub enum DbSource {
    /// A Secrets Manager secret id or ARN.
    Secret(String),
    /// A libpq-style URL, for local runs.
    Url(String),
}

impl fmt::Debug for DbSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbSource::Secret(id) => f.debug_tuple("Secret").field(id).finish(),
            DbSource::Url(_) => f.write_str("Url(<redacted>)"),
        }
    }
}

impl DbSource {
    /// Reads `<SECRET_VAR>` or else `<URL_VAR>` through `env`; neither is a Configuration error
    /// that names both.
    pub fn from_env(
        env: &impl Fn(&str) -> Option<String>,
        secret_var: &str,
        url_var: &str,
    ) -> Result<Self> {
        match (env(secret_var), env(url_var)) {
            (Some(id), _) if !id.trim().is_empty() => Ok(DbSource::Secret(id)),
            (_, Some(url)) if !url.trim().is_empty() => Ok(DbSource::Url(url)),
            _ => Err(Error::Configuration(format!(
                "set {secret_var} (a Secrets Manager secret id) or {url_var} (a PostgreSQL URL)"
            ))),
        }
    }
}

/// Database credentials as stored in a secret. Two shapes are accepted: ToteSys's own
/// `{host, port, user, password, database}` and the RDS-managed
/// `{username, password, host, port, dbname}`. `port` may be a number or a string.
#[derive(Clone, Deserialize)]
pub struct DbCredentials {
    pub host: String,
    #[serde(
        deserialize_with = "port_from_number_or_string",
        default = "default_port"
    )]
    pub port: u16,
    #[serde(alias = "username")]
    pub user: String,
    pub password: String,
    #[serde(alias = "dbname")]
    pub database: String,
    /// `disable`, `prefer` (default) or `require`.
    #[serde(default)]
    pub sslmode: Option<String>,
    /// A PEM file of root certificates to verify the server against.
    #[serde(default)]
    pub sslrootcert: Option<String>,
}

impl fmt::Debug for DbCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbCredentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

fn default_port() -> u16 {
    5432
}

fn port_from_number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Port::deserialize(d)? {
        Port::Number(n) => Ok(n),
        Port::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

impl DbCredentials {
    /// Parses a secret's JSON. The error names the secret and what is missing, never a value.
    pub fn from_secret_json(secret_id: &str, json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::Secret {
            secret_id: secret_id.to_owned(),
            // serde_json's messages name fields and positions, not values, except for
            // `invalid type: string "..."`, which we must not echo.
            reason: format!(
                "expected JSON with host, port, user|username, password, database|dbname ({})",
                redact_serde_error(&e)
            ),
            transient: false,
        })
    }

    fn to_config(&self) -> Result<(tokio_postgres::Config, Option<String>)> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.database);
        if let Some(mode) = &self.sslmode {
            config.ssl_mode(parse_ssl_mode(mode)?);
        }
        Ok((config, self.sslrootcert.clone()))
    }
}

fn redact_serde_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find('"') {
        // Cut anything quoted: it could be a value from the secret.
        Some(i) => format!(
            "{}<redacted> at line {} column {}",
            &text[..i],
            e.line(),
            e.column()
        ),
        None => text,
    }
}

fn parse_ssl_mode(mode: &str) -> Result<SslMode> {
    match mode {
        "disable" => Ok(SslMode::Disable),
        "prefer" => Ok(SslMode::Prefer),
        "require" => Ok(SslMode::Require),
        other => Err(Error::Configuration(format!(
            "sslmode {other:?}: expected disable, prefer or require (to verify the server, \
             give sslrootcert or DB_SSL_ROOT_CERT)"
        ))),
    }
}

/// Reads a secret string from Secrets Manager.
pub async fn fetch_secret(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<String> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            let transient = crate::store::is_transient_sdk_error(&e);
            Error::Secret {
                secret_id: secret_id.to_owned(),
                reason: format!(
                    "GetSecretValue failed: {}",
                    crate::store::describe_sdk_error(&e)
                ),
                transient,
            }
        })?;
    out.secret_string()
        .map(str::to_owned)
        .ok_or_else(|| Error::Secret {
            secret_id: secret_id.to_owned(),
            reason: "the secret has no SecretString".into(),
            transient: false,
        })
}

/// Resolves a [`DbSource`] into a connection configuration and an optional root certificate
/// file.
pub async fn resolve(
    source: &DbSource,
    secrets: &aws_sdk_secretsmanager::Client,
) -> Result<(tokio_postgres::Config, Option<String>)> {
    match source {
        DbSource::Secret(id) => {
            let json = fetch_secret(secrets, id).await?;
            DbCredentials::from_secret_json(id, &json)?.to_config()
        }
        DbSource::Url(url) => {
            let config = tokio_postgres::Config::from_str(url).map_err(|_| {
                // The parser's message may quote the URL, password included.
                Error::Configuration("the database URL is not a valid PostgreSQL URL".into())
            })?;
            Ok((config, None))
        }
    }
}

/// The environment variable naming a PEM bundle of root certificates for database TLS, read by
/// [`connect`] when the credentials do not name one (`sslrootcert`).
pub const ROOT_CERT_VAR: &str = "DB_SSL_ROOT_CERT";

/// What connecting needs once the credentials are known: the configuration and the TLS setup
/// with its root certificates, both reusable across connections.
#[derive(Clone)]
struct Prepared {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

fn prepare(mut config: tokio_postgres::Config, root_cert: Option<&str>) -> Result<Prepared> {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let root_cert = match root_cert {
        Some(path) => Some(path.to_owned()),
        None => std::env::var(ROOT_CERT_VAR).ok().filter(|s| !s.is_empty()),
    };
    let tls = tls_connector(root_cert.as_deref())?;
    Ok(Prepared { config, tls })
}

/// Connects and drives the connection on a task. Errors while connecting are transient
/// database errors, but for a refused certificate; they never contain the password.
async fn open(prepared: &Prepared, application_name: &str) -> Result<Client> {
    let mut config = prepared.config.clone();
    config.application_name(application_name);
    let (client, connection) = config.connect(prepared.tls.clone()).await.map_err(|e| {
        match rejected_certificate(&e) {
            // The same certificate meets the same roots on every retry.
            Some(reason) => Error::Configuration(format!(
                "TLS: the database server's certificate was not accepted ({reason}): check \
                 {ROOT_CERT_VAR} or sslrootcert, and the host name"
            )),
            None => Error::from(e),
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "database connection ended with an error");
        }
    });
    Ok(client)
}

/// Connects, with TLS as the configuration asks (see the module docs).
pub async fn connect(
    config: tokio_postgres::Config,
    root_cert: Option<&str>,
    application_name: &str,
) -> Result<Client> {
    open(&prepare(config, root_cert)?, application_name).await
}

/// Connects to one database for the life of an execution environment. The secret is read and
/// the TLS configuration (root certificates included) built on the first connection only;
/// warm invocations reuse them. When the database refuses the cached credentials (a rotated
/// password, a renamed user) the secret is read once more and the connection tried again.
/// Its clones share one cache.
#[derive(Clone)]
pub struct Connector {
    source: DbSource,
    secrets: aws_sdk_secretsmanager::Client,
    prepared: Arc<Mutex<Option<Prepared>>>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub fn new(source: DbSource, secrets: aws_sdk_secretsmanager::Client) -> Self {
        Connector {
            source,
            secrets,
            prepared: Arc::default(),
        }
    }

    pub async fn connect(&self, application_name: &str) -> Result<Client> {
        let cached = self.lock().clone();
        if let Some(prepared) = cached {
            match open(&prepared, application_name).await {
                Err(e) if is_refused_login(&e) => {
                    info!(error = %e, "the database refused the cached credentials: reading them again");
                }
                other => return other,
            }
        }
        let (config, root_cert) = resolve(&self.source, &self.secrets).await?;
        let prepared = prepare(config, root_cert.as_deref())?;
        *self.lock() = Some(prepared.clone());
        open(&prepared, application_name).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Prepared>> {
        // A panic elsewhere cannot leave the cache half-written: it is replaced whole.
        self.prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The server refused the login itself (SQLSTATE class 28: a wrong password, an unknown
/// user): credentials read again may be different.
fn is_refused_login(e: &Error) -> bool {
    matches!(e, Error::Database(db) if db.code().is_some_and(|c| c.code().starts_with("28")))
}

/// The reason the server's certificate was refused, when that is why the handshake failed: a
/// certificate the roots do not accept (unknown issuer, wrong name, expired). Other TLS
/// failures (a reset mid-handshake) stay transient.
fn rejected_certificate(e: &tokio_postgres::Error) -> Option<rustls::CertificateError> {
    let mut source = std::error::Error::source(e);
    while let Some(error) = source {
        // tokio-postgres-rustls reports rustls' error inside an io::Error, whose source() skips it.
        let inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(error), inner].into_iter().flatten() {
            if let Some(rustls::Error::InvalidCertificate(reason)) =
                candidate.downcast_ref::<rustls::Error>()
            {
                return Some(reason.clone());
            }
        }
        source = error.source();
    }
    None
}

fn tls_connector(root_cert: Option<&str>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Configuration(format!("TLS: {e}")))?;
    let config = match root_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| Error::Configuration(format!("root certificate {path}: {e}")))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert
                    .map_err(|e| Error::Configuration(format!("root certificate {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Configuration(format!("root certificate {path}: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// libpq's `sslmode=require` without a root certificate: the channel is encrypted and the
/// handshake signatures are checked, but the certificate chain is not.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totesys_secret_shape_parses() {
        let c = DbCredentials::from_secret_json(
            "totesys",
            r#"{"host":"db.example","port":5432,"user":"etl","password":"s3cret","database":"totesys"}"#,
        )
        .unwrap();
        assert_eq!(
            (
                c.host.as_str(),
                c.port,
                c.user.as_str(),
                c.database.as_str()
            ),
            ("db.example", 5432, "etl", "totesys")
        );
        assert_eq!(c.password, "s3cret");
        assert_eq!(c.sslmode, None);
    }

    #[test]
    fn rds_managed_secret_shape_parses_with_string_port() {
        let c = DbCredentials::from_secret_json(
            "rds!db-1",
            r#"{"username":"admin","password":"pw","engine":"postgres","host":"h","port":"6543","dbname":"dw","sslmode":"require"}"#,
        )
        .unwrap();
        assert_eq!(
            (c.user.as_str(), c.port, c.database.as_str()),
            ("admin", 6543, "dw")
        );
        let (config, root) = c.to_config().unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_dbname(), Some("dw"));
        assert_eq!(root, None);
    }

    #[test]
    fn secret_errors_name_the_secret_and_never_a_value() {
        let err = DbCredentials::from_secret_json(
            "src",
            r#"{"host":"h","user":"u","password":"hunter2"}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "secret src: expected JSON with host, port, user|username, password, \
             database|dbname (missing field `database` at line 1 column 44)"
        );
        let err = DbCredentials::from_secret_json("src", r#"{"host":"h","port":"hunter2"}"#)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = DbCredentials::from_secret_json("src", "hunter2")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = DbCredentials::from_secret_json(
            "s",
            r#"{"host":"h","port":1,"user":"u","password":"hunter2","database":"d"}"#,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let url = DbSource::Url("postgres://u:hunter2@h/d".into());
        assert_eq!(format!("{url:?}"), "Url(<redacted>)");
    }

    #[test]
    fn source_comes_from_secret_first_then_url_else_names_both() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = env(&[("S", "arn:secret"), ("U", "postgres://x")]);
        assert!(
            matches!(DbSource::from_env(&both, "S", "U").unwrap(), DbSource::Secret(s) if s == "arn:secret")
        );
        let url = env(&[("U", "postgres://x")]);
        assert!(matches!(
            DbSource::from_env(&url, "S", "U").unwrap(),
            DbSource::Url(_)
        ));
        let none = env(&[("S", " ")]);
        assert_eq!(
            DbSource::from_env(&none, "S", "U").unwrap_err().to_string(),
            "configuration: set S (a Secrets Manager secret id) or U (a PostgreSQL URL)"
        );
    }

    #[test]
    fn sslmode_names_are_checked() {
        assert_eq!(parse_ssl_mode("require").unwrap(), SslMode::Require);
        assert_eq!(parse_ssl_mode("disable").unwrap(), SslMode::Disable);
        assert!(parse_ssl_mode("sometimes").is_err());
    }
}
