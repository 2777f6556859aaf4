"""A private certificate authority made at test time with the openssl command (as tests/deploy's certificate is),
and a server certificate it signs for 127.0.0.1: what a company CA gives its webhook endpoints and SMTP servers."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
# As a CA's leaf certificates look (strict checkers want each of these).
_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class PrivateCa:
    name: str
    ca: Path  # the CA's certificate (PEM): what NBRELAY_NOTIFY_CA_FILE names
    cert: Path  # a server certificate for 127.0.0.1 that the CA signed
    key: Path

    @classmethod
    def make(cls, folder: Path, name: str) -> PrivateCa:
        folder.mkdir(parents=True, exist_ok=True)
        ca, ca_key = folder / "ca.pem", folder / "ca-key.pem"
        cert, key, request = folder / "server.pem", folder / "server-key.pem", folder / "server.csr"
        authority = ["-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE"]
        authority += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        _openssl("req", "-x509", *_EC_KEY, *authority, "-keyout", str(ca_key), "-out", str(ca), "-days", "2")
        _openssl("req", "-new", *_EC_KEY, "-keyout", str(key), "-out", str(request), "-subj", "/CN=127.0.0.1")
        (folder / "server.ext").write_text(_SERVER_EXTENSIONS)
        signing = ["-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-extfile", str(folder / "server.ext")]
        _openssl("x509", "-req", "-in", str(request), *signing, "-days", "2", "-out", str(cert))
        return cls(name, ca, cert, key)

    def server_context(self) -> ssl.SSLContext:
        """What a TLS server of this CA presents."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context
