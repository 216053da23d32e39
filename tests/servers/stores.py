"""Real report stores on loopback for the publishing tests.

- `S3Server`: moto's S3-protocol server (``moto_server``) in its own process. It enforces the
  conditional writes the S3 store relies on (``If-None-Match: *``, ``If-Match``).
- `GitHttpServer`: git's own smart-HTTP server (``git http-backend``) behind a small loopback HTTP
  front that demands a token the way GitHub does (basic auth, user ``x-access-token``), and records
  every Authorization header it saw — so a test can prove the token went as a header, and nowhere
  else.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import boto3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    ENV = {"AWS_ACCESS_KEY_ID": "AKIAMLOBSTEST", "AWS_SECRET_ACCESS_KEY": "s3cr3t-MLOBS-test-key",
           "AWS_REGION": "us-east-1"}

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**self.ENV, "AWS_ENDPOINT_URL": self.url}
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> S3Server:
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
        assert exe, "moto_server is missing: the dev extra installs moto"
        self._proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto_server did not start")
        return self

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.ENV["AWS_SECRET_ACCESS_KEY"])

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def dump(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        client, found, token = self.client(), {}, None
        while True:
            kwargs = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = client.list_objects_v2(**kwargs)
            for item in page.get("Contents", []):
                key = item["Key"]
                found[key[len(prefix):].lstrip("/")] = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def git_dump(repo: Path, branch: str) -> dict[str, bytes]:
    """Every file on ``branch`` of a bare repository, by path (empty if the branch is absent)."""
    env = {"PATH": os.environ["PATH"], "GIT_DIR": str(repo)}
    ref = subprocess.run(["git", "rev-parse", "--verify", "-q", f"refs/heads/{branch}"], env=env,
                         capture_output=True, text=True)
    if ref.returncode != 0:
        return {}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", ref.stdout.strip()], env=env,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    return {name: subprocess.run(["git", "cat-file", "blob", f"{ref.stdout.strip()}:{name}"], env=env,
                                 capture_output=True, check=True).stdout for name in names if name}


def git_log(repo: Path, branch: str) -> list[str]:
    env = {"PATH": os.environ["PATH"], "GIT_DIR": str(repo)}
    out = subprocess.run(["git", "rev-list", "--first-parent", f"refs/heads/{branch}"], env=env,
                         capture_output=True, text=True)
    return out.stdout.split() if out.returncode == 0 else []


def bare_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


class GitHttpServer:
    """``http://127.0.0.1:PORT/<owner>/<repo>.git`` served by git http-backend from ``root``."""

    def __init__(self, root: Path, token: str) -> None:
        self.root, self.token = root, token
        self.authorizations: list[str] = []
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._serve()

            def do_POST(self):
                self._serve()

            def _serve(self):
                outer.requests.append(f"{self.command} {self.path}")
                auth = self.headers.get("Authorization", "")
                outer.authorizations.append(auth)
                expected = "Basic " + base64.b64encode(f"x-access-token:{outer.token}".encode()).decode()
                if auth.lower() != expected.lower():
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(outer.root),
                       "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command,
                       "PATH_INFO": parts.path, "QUERY_STRING": parts.query,
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                       "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": "x-access-token",
                       "REMOTE_ADDR": "127.0.0.1",
                       "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                       "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
                proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
                head, _, payload = proc.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode().split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> GitHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
