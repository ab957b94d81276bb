"""The run's test PKI: a CA made for this run ("run CA"), an unrelated one ("other CA",
whose certificates a proxy trusting the run CA must refuse), and one server certificate per
FTP service with `tls = true`, naming its host and every address the topology gives it.

Pure functions make keys and certificates; `write_run_pki` is the one place that writes
files. EC P-256 keys: quick to make (a run makes several), and every server here takes
them. Validity is one day: long enough for any run, short enough that a kept output folder
holds nothing worth stealing.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_KINDS = ("run", "other")
VALIDITY = datetime.timedelta(days=1)
# Backdated a little: a container's clock or a server's check may differ by a second.
SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Authority:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class ServerTls:
    """What an FTP server needs to speak TLS: its certificate and key files, and the
    highest protocol version it may offer ("" = what its OpenSSL allows, "1.2")."""

    cert: Path
    key: Path
    max_version: str = ""


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(common_name: str, now: datetime.datetime) -> Authority:
    """A self-signed CA with the extensions strict verifiers (Python 3.13's
    VERIFY_X509_STRICT) insist on: critical basicConstraints, keyUsage, a key identifier."""
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ftp-ssh-tunnel testbed")])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Authority(common_name, key, cert)


def san_entries(host: str, addresses: Sequence[str]) -> list[x509.GeneralName]:
    """The host's name, its `<host>-v6` name if it has IPv6 (the testbed's hosts files name
    IPv6 addresses so, see topology.hosts_file) and every address."""
    ips = [ipaddress.ip_address(a) for a in addresses]
    names: list[x509.GeneralName] = [x509.DNSName(host)]
    if any(ip.version == 6 for ip in ips):
        names.append(x509.DNSName(f"{host}-v6"))
    return names + [x509.IPAddress(ip) for ip in ips]


def issue(ca: Authority, host: str, addresses: Sequence[str], now: datetime.datetime
          ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate for `host`: CN = the host name, SAN = san_entries()."""
    key = _key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(san_entries(host, addresses)),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return key, cert


def fingerprint(cert: x509.Certificate | bytes) -> str:
    """"sha256:" + lowercase hex of the SHA-256 of the certificate's DER (bytes: the DER)."""
    der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class RunPki:
    """What `write_run_pki` wrote: the CAs' PEM files and each host's server files."""

    ca: Path
    other_ca: Path
    servers: dict[str, ServerTls]
    fingerprints: dict[str, str]  # host -> its leaf's fingerprint()


def write_run_pki(folder: Path, hosts: Mapping[str, tuple[Sequence[str], str]],
                  now: datetime.datetime | None = None) -> RunPki:
    """Both CAs and, for each host -> (addresses, "run" | "other"), a certificate signed by
    that CA, written under `folder` (keys 0600: servers that read them run as root)."""
    now = now or datetime.datetime.now(datetime.UTC)
    folder.mkdir(parents=True, exist_ok=True)
    cas = {"run": make_ca("testbed run CA", now), "other": make_ca("testbed other CA", now)}
    for kind, ca in cas.items():
        (folder / f"{kind}-ca.pem").write_bytes(cert_pem(ca.cert))
    servers, prints = {}, {}
    for host, (addresses, signer) in hosts.items():
        key, cert = issue(cas[signer], host, addresses, now)
        cert_path, key_path = folder / f"{host}.crt", folder / f"{host}.key"
        cert_path.write_bytes(cert_pem(cert))
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem(key))
        servers[host] = ServerTls(cert_path, key_path)
        prints[host] = fingerprint(cert)
    return RunPki(folder / "run-ca.pem", folder / "other-ca.pem", servers, prints)


def openssl_cap_config(path: Path, max_version: str) -> Path:
    """An OpenSSL config whose system default caps every TLS context at `max_version`:
    for servers with no setting of their own (vsftpd 3.0.3, pure-ftpd), run with
    OPENSSL_CONF pointing at it."""
    path.write_text("\n".join([
        "openssl_conf = testbed_conf", "[testbed_conf]", "ssl_conf = testbed_ssl",
        "[testbed_ssl]", "system_default = testbed_system", "[testbed_system]",
        f"MaxProtocol = TLSv{max_version}", ""]))
    return path
