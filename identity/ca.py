"""A small X.509-SVID certificate authority for `sluice demo` and for tests.

It issues certificates that follow the X509-SVID specification: leaves carry exactly one SPIFFE ID
URI SAN, ``CA:FALSE`` and a critical key usage of ``digitalSignature`` only; signing certificates
carry ``CA:TRUE`` and ``keyCertSign``/``cRLSign``. Production deployments use SPIRE (served through
the SPIFFE Workload API) instead; this exists so that nothing has to be downloaded or
pre-provisioned to run the demo or the test suite.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from identity.pem import certificates_pem, private_key_pem
from identity.spiffe_id import SpiffeID, TrustDomain
from identity.x509svid import X509SVID

KeyType = Literal["ec", "rsa", "ed25519"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

__all__ = ["IssuedSVID", "SvidAuthority", "certificates_pem", "new_private_key", "private_key_pem"]

DEFAULT_CA_LIFETIME = dt.timedelta(days=365)
DEFAULT_SVID_LIFETIME = dt.timedelta(hours=1)


def new_private_key(key_type: KeyType = "ec") -> PrivateKey:
    """A fresh key of the given type (P-256, RSA-2048 or Ed25519)."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519 signs the message itself; X.509 requires the algorithm parameter to be absent.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


# The CA issues plain X.509-SVIDs; the name says where one came from in tests and the demo.
IssuedSVID = X509SVID


@dataclass(frozen=True, slots=True)
class SvidAuthority:
    """A signing certificate and its key.

    ``parents`` are the signing certificates above it, the root last.
    """

    trust_domain: TrustDomain
    certificate: x509.Certificate
    private_key: PrivateKey
    parents: tuple[x509.Certificate, ...] = ()

    @classmethod
    def create_root(
        cls,
        trust_domain: TrustDomain,
        *,
        key_type: KeyType = "ec",
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = DEFAULT_CA_LIFETIME,
    ) -> SvidAuthority:
        """A self-signed root for ``trust_domain``: the trust bundle's content."""
        now = now or dt.datetime.now(dt.UTC)
        key = new_private_key(key_type)
        name = _ca_name(trust_domain, "root")
        cert = _ca_builder(name, name, key.public_key(), trust_domain, now, lifetime).sign(
            key, _hash_for(key)
        )
        return cls(trust_domain, cert, key)

    @property
    def bundle(self) -> tuple[x509.Certificate, ...]:
        """The root certificate(s) a verifier trusts for this trust domain."""
        return (self.parents[-1],) if self.parents else (self.certificate,)

    def bundle_pem(self) -> bytes:
        return certificates_pem(self.bundle)

    def intermediate(
        self,
        *,
        key_type: KeyType = "ec",
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = DEFAULT_CA_LIFETIME,
    ) -> SvidAuthority:
        """A subordinate signing authority whose certificates chain through this one."""
        now = now or dt.datetime.now(dt.UTC)
        key = new_private_key(key_type)
        name = _ca_name(self.trust_domain, "intermediate")
        cert = (
            _ca_builder(
                name, self.certificate.subject, key.public_key(), self.trust_domain, now, lifetime
            )
            .add_extension(_aki(self.certificate), critical=False)
            .sign(self.private_key, _hash_for(self.private_key))
        )
        return SvidAuthority(self.trust_domain, cert, key, (self.certificate, *self.parents))

    def issue(
        self,
        spiffe_id: SpiffeID,
        *,
        key_type: KeyType = "ec",
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = DEFAULT_SVID_LIFETIME,
        private_key: PrivateKey | None = None,
        dns_names: tuple[str, ...] = (),
    ) -> X509SVID:
        """Issue an X.509-SVID for ``spiffe_id``; the chain excludes the root."""
        now = now or dt.datetime.now(dt.UTC)
        key = private_key or new_private_key(key_type)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(spiffe_id))]
        sans += [x509.DNSName(d) for d in dns_names]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sluice")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(_aki(self.certificate), critical=False)
            .sign(self.private_key, _hash_for(self.private_key))
        )
        intermediates = (self.certificate, *self.parents[:-1]) if self.parents else ()
        return X509SVID(spiffe_id, (cert, *intermediates), key)


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _ca_name(trust_domain: TrustDomain, role: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sluice"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain.name} {role}"),
        ]
    )


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
    trust_domain: TrustDomain,
    now: dt.datetime,
    lifetime: dt.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain.id_string)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
