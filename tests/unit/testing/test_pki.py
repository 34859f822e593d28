"""Generated apiserver certificates chain to the CA and name the loopback address."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from modelcache.testing.pki import write_apiserver_pki


def test_serving_cert_is_signed_by_the_ca_for_loopback(tmp_path: Path) -> None:
    pki = write_apiserver_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())

    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)


def test_private_keys_are_readable_only_by_their_owner(tmp_path: Path) -> None:
    pki = write_apiserver_pki(tmp_path)
    for key in (pki.serving_key, pki.service_account_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_each_call_makes_new_keys(tmp_path: Path) -> None:
    first = write_apiserver_pki(tmp_path / "a")
    second = write_apiserver_pki(tmp_path / "b")
    assert first.service_account_key.read_bytes() != second.service_account_key.read_bytes()
