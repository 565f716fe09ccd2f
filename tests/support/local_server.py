"""A model server on 127.0.0.1 for tests and benchmarks (not part of the package: nothing in
``fsd`` runs it, and a logged model carries only the code it runs).

``LocalServer``: ``mlflow models serve`` (or ``fsd serve``) as a context manager;
``audio_request``: the JSON body a client sends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsd.serving.requests import AUDIO_COLUMN


class LocalServer:
    """``mlflow models serve -m URI --env-manager local`` on 127.0.0.1, as a context manager;
    with ``front=True`` ``fsd serve --model URI`` instead (``serve_args`` appended).

    Waits for ``/ping`` (bounded by ``start_timeout``) and always stops the whole process group
    on exit, so a failing test or benchmark never leaves a server behind.
    """

    def __init__(self, model_uri: str, *, port: int = 0, env: dict[str, str] | None = None,
                 start_timeout: float = 180.0, request_timeout: int = 60, log_path: Path | None = None,
                 front: bool = False, serve_args: list[str] | None = None):
        self.front = front
        self.serve_args = list(serve_args or [])
        self.model_uri = model_uri
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout
        self.log_path = log_path
        self._proc = None
        self._log = None
        self._own_log = False

    def __enter__(self) -> LocalServer:
        import os
        import subprocess
        import sys
        import tempfile

        env = dict(os.environ if self.env is None else self.env)
        # MLflow launches `uvicorn` by name: the interpreter's bin folder must be on PATH
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
        env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(self.request_timeout)
        if self.log_path is None:
            self._log = tempfile.NamedTemporaryFile("w+b", prefix="fsd-serve-", suffix=".log",
                                                    delete=False)
            self.log_path = Path(self._log.name)
            self._own_log = True
        else:
            self._log = open(self.log_path, "w+b")
        if self.front:
            cmd = [sys.executable, "-m", "fsd", "serve", "--model", self.model_uri,
                   "--host", "127.0.0.1", "--port", str(self.port),
                   "--timeout", str(self.request_timeout), *self.serve_args]
        else:
            cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", self.model_uri,
                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port)]
        self._proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import time
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the model server exited with {self._proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the model server did not answer /ping within {self.start_timeout:.0f} s:"
                           f"\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return Path(self.log_path).read_bytes()[-n:].decode(errors="replace")
        except (OSError, TypeError):
            return ""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self) -> None:
        import os
        import signal
        import subprocess

        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_log:  # a temp log of ours; errors already carried its tail
            Path(self.log_path).unlink(missing_ok=True)
            self._own_log = False

    def __exit__(self, *exc) -> None:
        self.stop()

    def invoke(self, payload: dict | bytes | str, timeout: float = 120.0,
               content_type: str = "application/json") -> tuple[int, Any]:
        """POST /invocations; returns (status, parsed JSON or text). Never raises for 4xx/5xx."""
        import json
        import urllib.error
        import urllib.request

        body = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        req = urllib.request.Request(f"{self.url}/invocations", data=body, method="POST",
                                     headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def audio_request(blobs: list[bytes], params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body for /invocations: base64 clips in ``dataframe_split``, optional params."""
    import base64

    body: dict[str, Any] = {"dataframe_split": {
        "columns": [AUDIO_COLUMN], "data": [[base64.b64encode(b).decode()] for b in blobs]}}
    if params:
        body["params"] = params
    return body
