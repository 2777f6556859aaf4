"""Real nginx from Debian in front of real nbrelay servers: a self-signed certificate made here, and the shipped
deploy/nginx.conf with only its "[test]" values replaced (ports, certificate, upstream, timeouts, Host)."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

SHIPPED = Path(__file__).parents[2] / "deploy" / "nginx.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise RuntimeError("nginx is not installed: scripts/test installs it (scripts/nginx.sh, ensure_nginx)")
    return found


@dataclass
class Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, and a client context that trusts only it."""

    cert: Path
    key: Path

    @classmethod
    def make(cls, folder: Path) -> Certificate:
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / "cert.pem", folder / "key.pem"
        command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        command += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"]
        command += ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
        subprocess.run(command, check=True, capture_output=True)
        return cls(cert, key)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def render(shipped: str, replacements: dict[str, str]) -> str:
    """The shipped recipe with values replaced; each old value must be in it, or the recipe changed under us."""
    text = shipped
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"deploy/nginx.conf no longer has {old!r}: update tests/deploy to match")
        text = text.replace(old, new)
    return text


@dataclass
class Nginx:
    """nginx as the current user: `-p <folder> -c <conf> -g 'daemon off;'`, its pid, logs and temp files inside."""

    folder: Path
    certificate: Certificate
    upstream_port: int
    read_timeout_s: int | None = None  # the WebSocket and SSE proxy_read_timeout; None: the shipped 60 s
    host_header: str | None = None  # what nginx sends as Host; None: the shipped $http_host
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        """The public origin, as a browser at https://localhost:<port> sends it."""
        return f"https://localhost:{self.https_port}"

    @property
    def wss(self) -> str:
        return f"wss://localhost:{self.https_port}"

    @property
    def error_log(self) -> Path:
        return self.folder / "error.log"

    def site(self) -> str:
        replacements = {
            "server 127.0.0.1:8765;": f"server 127.0.0.1:{self.upstream_port};",
            "listen 80;": f"listen 127.0.0.1:{self.http_port};",
            "listen [::]:80;": "# (test: IPv4 loopback only)",
            "listen 443 ssl http2;": f"listen 127.0.0.1:{self.https_port} ssl http2;",
            "listen [::]:443 ssl http2;": "# (test: IPv4 loopback only)",
            "/etc/ssl/nbrelay/fullchain.pem": str(self.certificate.cert),
            "/etc/ssl/nbrelay/privkey.pem": str(self.certificate.key),
        }
        if self.read_timeout_s is not None:
            replacements["proxy_read_timeout 60s;  # [test]"] = f"proxy_read_timeout {self.read_timeout_s}s;  # [test]"
        if self.host_header is not None:
            replacements["proxy_set_header Host $http_host;"] = f"proxy_set_header Host {self.host_header};"
        return render(SHIPPED.read_text(), replacements)

    def main_conf(self, site: Path) -> str:
        folder = self.folder
        # As root nginx would hand its workers to "nobody", who may not enter pytest's private temp folders.
        user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"{user}worker_processes 1;\npid {folder / 'nginx.pid'};\nerror_log {self.error_log} info;\n"
            f"events {{ worker_connections 512; }}\n"
            f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n    include {site};\n}}\n"
        )

    def start(self, timeout_s: float = 30) -> Nginx:
        self.folder.mkdir(parents=True, exist_ok=True)
        site, conf = self.folder / "nbrelay.conf", self.folder / "nginx.conf"
        site.write_text(self.site())
        conf.write_text(self.main_conf(site))
        command = [nginx_binary(), "-p", str(self.folder), "-e", str(self.error_log), "-c", str(conf)]
        self.process = subprocess.Popen([*command, "-g", "daemon off;"], stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"nginx exited at start:\n{stderr}\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen within {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # fast shutdown: open tunnels are closed
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
