//! The per-install certificate authority the proxy uses to terminate TLS for hosts that have a
//! bound credential (see `credentials` and `proxy::intercept`).
//!
//! Files under `<home>/ca/` (folder 0700): `ca.pem`, the certificate (may be shown to anyone;
//! a copy is mounted into containers), and `ca.key`, its private key (0600; never leaves the
//! host, never mounted, never logged). Generated with rcgen on first need; valid for
//! [`CA_YEARS`] years; replaced by `claw ca rotate`. Leaf certificates are made in memory per
//! proxy start, live [`LEAF_DAYS`] days and are never written to disk.
//!
//! The CA signs leaves for any name, so whoever holds `ca.key` can impersonate any site to a
//! client that trusts `ca.pem`. Only claw's own containers trust it (through the bundle mounted
//! at run time); the host's trust store is never touched.

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::infra::paths::Home;

/// rcgen's date (midnight UTC) of a calendar day; a macro because rcgen does not export the type.
macro_rules! ymd {
    ($d:expr) => {{
        use chrono::Datelike;
        let d: chrono::NaiveDate = $d;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    }};
}

/// Lifetime of a generated CA, in years.
pub const CA_YEARS: i32 = 10;
/// Lifetime of a leaf certificate, in days (a proxy lives as long as one run).
pub const LEAF_DAYS: i64 = 7;

/// The CA's certificate (PEM) and its signing key, loaded on the host.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca { key: <redacted> }")
    }
}

/// Where the CA of a home lives.
pub fn dir(home: &Home) -> PathBuf {
    home.path().join("ca")
}

/// Path of the CA certificate.
pub fn cert_path(home: &Home) -> PathBuf {
    dir(home).join("ca.pem")
}

/// Path of the CA private key.
pub fn key_path(home: &Home) -> PathBuf {
    dir(home).join("ca.key")
}

/// The subject of the CA. Fixed per home so the issuer rebuilt from it at load time names
/// exactly the certificate's subject (rcgen signs leaves from the subject and the key alone).
fn ca_params(home: &Home) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "claw");
    dn.push(
        DnType::CommonName,
        format!("claw per-install CA {}", home.tag()),
    );
    p.distinguished_name = dn;
    // Path length 0: it signs leaves, never another CA.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Loads the home's CA, creating it first if there is none.
pub fn ensure(home: &Home) -> Result<Ca> {
    if !key_path(home).exists() || !cert_path(home).exists() {
        generate(home)?;
    }
    load(home)
}

/// Loads the home's CA; fails if it is missing or its key is readable by others.
pub fn load(home: &Home) -> Result<Ca> {
    let key_file = key_path(home);
    let meta = std::fs::metadata(&key_file)
        .with_context(|| format!("cannot read the claw CA key {}", key_file.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by other users; fix it with `chmod 600 {}` or replace the CA with `claw ca rotate`",
            key_file.display(),
            key_file.display()
        );
    }
    let key_pem = std::fs::read_to_string(&key_file)
        .with_context(|| format!("cannot read {}", key_file.display()))?;
    let key = KeyPair::from_pem(&key_pem).with_context(|| {
        format!(
            "{} is not a usable key; replace the CA with `claw ca rotate`",
            key_file.display()
        )
    })?;
    let cert_pem = std::fs::read_to_string(cert_path(home))
        .with_context(|| format!("cannot read {}", cert_path(home).display()))?;
    Ok(Ca {
        cert_pem,
        issuer: Issuer::new(ca_params(home)?, key),
    })
}

/// Makes a new CA (key and certificate), replacing any existing one. Containers already running
/// keep the bundle and the proxy they started with; the next run uses the new CA.
pub fn generate(home: &Home) -> Result<()> {
    let d = dir(home);
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
    let key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut params = ca_params(home)?;
    let today = chrono::Utc::now().date_naive();
    // A day back, so a clock slightly behind in a container still accepts it.
    params.not_before = ymd!(today - chrono::Duration::days(1));
    params.not_after = ymd!(today + chrono::Duration::days(365 * i64::from(CA_YEARS)));
    let cert = params
        .self_signed(&key)
        .context("cannot sign the CA certificate")?;
    // Key first, through a temporary name with 0600 from creation; then the certificate. A
    // crash between the two leaves a pair that does not match, which `load` callers see as a
    // TLS failure and `claw ca rotate` repairs.
    write_atomic(&key_path(home), key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path(home), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A leaf certificate for one host (a DNS name or an IP literal), signed by the CA.
pub struct Leaf {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Ca {
    /// Issues a certificate for `host`, valid from a day ago for [`LEAF_DAYS`] days.
    pub fn issue(&self, host: &str) -> Result<Leaf> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.try_into()?),
        }];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let today = chrono::Utc::now().date_naive();
        p.not_before = ymd!(today - chrono::Duration::days(1));
        p.not_after = ymd!(today + chrono::Duration::days(LEAF_DAYS));
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }
}

/// The trust bundle mounted into containers: Mozilla's roots (the same list the proxy trusts
/// upstream) followed by the claw CA, as PEM.
pub fn bundle(ca_cert_pem: &str) -> String {
    let mut out = String::with_capacity(250 * 1024);
    for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        out.push_str(&pem_block("CERTIFICATE", der.as_ref()));
    }
    out.push_str("# claw per-install CA (terminates TLS for hosts with a bound credential)\n");
    out.push_str(ca_cert_pem);
    if !ca_cert_pem.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap_or(""));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// The DER bytes of every `CERTIFICATE` block in a PEM text (other blocks are skipped).
pub fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut rest = pem;
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    while let Some(a) = rest.find(begin) {
        let body = &rest[a + begin.len()..];
        let Some(b) = body.find(end) else { break };
        let b64: String = body[..b].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &body[b + end.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_with_a_private_key_and_signs_leaves() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        let ca = ensure(&home).unwrap();
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(key_path(&home)), 0o600);
        assert_eq!(mode(dir(&home)), 0o700);
        let again = ensure(&home).unwrap();
        assert_eq!(ca.cert_pem, again.cert_pem, "an existing CA is kept");
        let leaf = ca.issue("api.example.com").unwrap();
        assert!(!leaf.cert_der.is_empty());
        assert!(ca.issue("127.0.0.1").is_ok());
        generate(&home).unwrap();
        assert_ne!(
            load(&home).unwrap().cert_pem,
            ca.cert_pem,
            "rotation replaces it"
        );
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        ensure(&home).unwrap();
        std::fs::set_permissions(key_path(&home), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&home).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn bundle_holds_the_roots_and_the_ca() {
        let b = bundle("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        assert!(b.matches("BEGIN CERTIFICATE").count() > 100);
        assert!(b.trim_end().ends_with("AAAA\n-----END CERTIFICATE-----"));
        assert_eq!(
            pem_blocks(&b).len(),
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() + 1
        );
    }
}
