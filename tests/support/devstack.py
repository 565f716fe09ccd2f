"""The local stand-in for a team's tracking stack: PostgreSQL + an S3 server + ``mlflow server``.

Production runs the same ``mlflow server`` against a managed PostgreSQL and AWS S3 or MinIO
(see docs/tracking-server.md and deploy/tracking-server.sh). Here, on 127.0.0.1 free ports:

- **PostgreSQL** from the Debian package (``/usr/lib/postgresql/<v>/bin``): ``initdb`` into a
  fresh folder (as the ``postgres`` user when run as root: PostgreSQL refuses root), password
  authentication (scram-sha-256) for user ``fsd``, databases ``mlflow`` and ``optuna``, TCP on
  loopback only;
- **moto's server mode** (``moto[server]`` from PyPI) as the S3 endpoint, with a bucket;
- **mlflow server** with ``--backend-store-uri postgresql+psycopg2://fsd@127.0.0.1:<port>/mlflow``
  (no password in the URI: libpq reads ``PGPASSWORD``) and ``--artifacts-destination
  s3://<bucket>/mlartifacts`` (proxied: clients upload and download through the server and
  need no S3 credentials; the server's boto3 reads ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY`` and ``MLFLOW_S3_ENDPOINT_URL`` from its environment), behind
  MLflow's own ``basic-auth`` app (``--app-name basic-auth``, users in the database
  ``mlflow_auth``): the admin's password comes from ``MLFLOW_AUTH_ADMIN_PASSWORD``, the
  stack creates a worker user, and workers authenticate with ``MLFLOW_TRACKING_USERNAME`` /
  ``MLFLOW_TRACKING_PASSWORD``; a request without them is refused (401).

Every credential is random per stack and passed only through environment variables.
``python tests/support/devstack.py`` starts one, prints the ``export`` lines for workers, and stops it
all on Ctrl-C. Tests use :class:`Stack` as a context manager.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from unittest import mock

PG_USER = "fsd"
BUCKET = "fsd-artifacts"
ADMIN_USER = "fsd-admin"
WORKER_USER = "fsd-worker"
AUTH_INI = """[mlflow]
default_permission = EDIT
database_uri = {database_uri}
admin_username = {admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = true
"""


class StackError(RuntimeError):
    """A part of the stack is not installed or did not come up."""


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL bin folder (or where ``initdb`` is on PATH), else None."""
    def version(path: str) -> int:
        name = Path(path).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def missing_parts() -> list[str]:
    """What this machine lacks to start the stack ([] when it can)."""
    missing = []
    if postgres_bin() is None:
        missing.append("PostgreSQL server binaries (apt-get install postgresql)")
    for module, pip_name in (("psycopg2", "psycopg2-binary"), ("moto.server", "moto[server]"),
                             ("flask_cors", "moto[server]"), ("flask_wtf", "Flask-WTF")):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"python package {pip_name} (pip install -e '.[distributed]')")
    return missing


def skip_or_fail(reason: str) -> None:
    """A distributed test without what it needs: skipped, saying ``reason``; under
    ``FSD_REQUIRE_DISTRIBUTED=1`` (CI) a failure instead."""
    import pytest

    if os.environ.get("FSD_REQUIRE_DISTRIBUTED") == "1":
        pytest.fail(f"FSD_REQUIRE_DISTRIBUTED=1 but {reason}")
    pytest.skip(reason)


def require_stack() -> None:
    """:func:`skip_or_fail` when this machine cannot start the stack."""
    missing = missing_parts()
    if missing:
        skip_or_fail("the distributed stack needs " + "; ".join(missing))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, ok, proc: subprocess.Popen | None, timeout: float, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ok():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with {proc.returncode}" + _tail(log))
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not come up in {timeout:.0f} s" + _tail(log))
        time.sleep(0.3)


def _tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    return "; its log ends:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])


class Stack:
    """PostgreSQL, moto S3 and mlflow server on loopback; ``env`` is what workers need."""

    def __init__(self, root: str | Path | None = None, mlflow_workers: int = 2):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fsd-stack-"))
        self.mlflow_workers = mlflow_workers
        self.pg_password = "pg-" + secrets.token_urlsafe(18)
        self.aws_key_id = "AKIA" + secrets.token_hex(8).upper()
        self.aws_secret = "aws-" + secrets.token_urlsafe(24)
        self.admin_password = "adm-" + secrets.token_urlsafe(18)
        self.worker_password = "wrk-" + secrets.token_urlsafe(18)
        self.pg_port = self.s3_port = self.mlflow_port = 0
        self._procs: list[subprocess.Popen] = []
        self._pg_data: Path | None = None

    # -- what clients use -----------------------------------------------------------------

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def db_url(self, database: str, with_password: bool = False) -> str:
        auth = f"{PG_USER}:{self.pg_password}" if with_password else PG_USER
        # +psycopg2: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3
        return f"postgresql+psycopg2://{auth}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def secrets(self) -> list[str]:
        return [self.pg_password, self.aws_secret, self.admin_password, self.worker_password]

    @property
    def server_env(self) -> dict[str, str]:
        """The credentials, as environment variables (the only way they travel)."""
        return {"PGPASSWORD": self.pg_password, "AWS_ACCESS_KEY_ID": self.aws_key_id,
                "AWS_SECRET_ACCESS_KEY": self.aws_secret, "AWS_DEFAULT_REGION": "us-east-1",
                "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint}

    @property
    def worker_env(self) -> dict[str, str]:
        """A worker's environment: the server's URI, its user and password on the server, and
        PGPASSWORD for a shared Optuna study."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "PGPASSWORD": self.pg_password,
                "MLFLOW_TRACKING_USERNAME": WORKER_USER,
                "MLFLOW_TRACKING_PASSWORD": self.worker_password}

    def credentials(self):
        """This process's MLflow clients authenticated as the worker user (they read the
        variables), for as long as the block runs; the variables as they were afterwards."""
        names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        return mock.patch.dict(os.environ, {k: self.worker_env[k] for k in names})

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        missing = missing_parts()
        if missing:
            raise StackError("cannot start the stack: missing " + "; ".join(missing))
        try:
            self._start_postgres()
            self._start_s3()
            self._wait_postgres()
            self._create_databases()
            self._start_mlflow()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _popen(self, cmd: list[str], log_name: str, env: dict[str, str] | None = None,
               user: str | None = None) -> subprocess.Popen:
        log = open(self.root / f"{log_name}.log", "wb")
        kwargs = {}
        if user is not None:
            pw = pwd.getpwnam(user)
            kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, cwd=self.root, **kwargs)
        log.close()
        self._procs.append(proc)
        return proc

    def _pg_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise StackError("running as root, and there is no `postgres` user to run "
                             "PostgreSQL as (the Debian package creates it)") from None
        return "postgres"

    def _start_postgres(self) -> None:
        bin_dir = postgres_bin()
        user = self._pg_user()
        # Under /tmp, not the caller's (maybe root-only) folder: the postgres user must reach it.
        self._pg_data = Path(tempfile.mkdtemp(prefix="fsd-pg-"))
        pwfile = self._pg_data / "pwfile"
        data = self._pg_data / "data"
        pwfile.write_text(self.pg_password + "\n")
        if user:
            pw = pwd.getpwnam(user)
            os.chown(self._pg_data, pw.pw_uid, pw.pw_gid)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        pwfile.chmod(0o600)
        self.root.mkdir(parents=True, exist_ok=True)
        init = self._popen([str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER,
                            "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                            "--no-sync"], "initdb", user=user)
        if init.wait(timeout=120) != 0:
            raise StackError("initdb failed" + _tail(self.root / "initdb.log"))
        pwfile.unlink()
        self.pg_port = free_port()
        self._pg = self._popen([str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.pg_port),
                                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                                "-c", "fsync=off", "-c", "max_connections=100"],
                               "postgres", user=user)

    def _wait_postgres(self) -> None:
        import psycopg2

        def ok() -> bool:
            psycopg2.connect(host="127.0.0.1", port=self.pg_port, user=PG_USER,
                             password=self.pg_password, dbname="postgres", connect_timeout=2).close()
            return True

        _wait("PostgreSQL", ok, self._pg, 60, self.root / "postgres.log")

    def _create_databases(self) -> None:
        self.create_database("mlflow", "optuna", "mlflow_auth")

    def create_database(self, *names: str) -> None:
        """New, empty databases owned by the stack's user (e.g. an Optuna study of its own)."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user=PG_USER,
                                password=self.pg_password, dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for db in names:
                    cur.execute(f"CREATE DATABASE {db}")
        finally:
            conn.close()

    def _start_s3(self) -> None:
        self.s3_port = free_port()
        env = {**os.environ, **self.server_env}
        self._s3 = self._popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                "-p", str(self.s3_port)], "s3", env=env)

        def ok() -> bool:
            urllib.request.urlopen(self.s3_endpoint, timeout=2)
            return True

        _wait("moto S3 server", ok, self._s3, 60, self.root / "s3.log")
        self.s3_client().create_bucket(Bucket=BUCKET)

    def s3_client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, aws_access_key_id=self.aws_key_id,
                            aws_secret_access_key=self.aws_secret, region_name="us-east-1")

    def _start_mlflow(self) -> None:
        self.mlflow_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(self.server_env)
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # the basic-auth app: its settings in a file without secrets, the admin's password and
        # the CSRF key in the environment only
        ini = self.root / "basic_auth.ini"
        ini.write_text(AUTH_INI.format(database_uri=self.db_url("mlflow_auth"), admin=ADMIN_USER))
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.admin_password
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_urlsafe(32)
        self._mlflow = self._popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(self.mlflow_port), "--workers", str(self.mlflow_workers),
             "--app-name", "basic-auth",
             "--backend-store-uri", self.db_url("mlflow"),
             "--artifacts-destination", f"s3://{BUCKET}/mlartifacts"], "mlflow", env=env)

        def ok() -> bool:
            urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2)
            return True

        # ~20 s on an idle 2-core machine; minutes when it is busy (schema migrations)
        _wait("mlflow server", ok, self._mlflow, 900, self.root / "mlflow.log")
        self._create_worker_user()

    def request(self, path: str, body: dict | None = None, user: str | None = None,
                password: str | None = None) -> tuple[int, bytes]:
        """An HTTP request to the tracking server (POST with a JSON ``body``, else GET), with
        basic auth when ``user`` is given: (status, body)."""
        import base64
        import json
        import urllib.error

        req = urllib.request.Request(f"{self.tracking_uri}{path}",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _create_worker_user(self) -> None:
        status, _ = self.request("/api/2.0/mlflow/users/create",
                                 {"username": WORKER_USER, "password": self.worker_password},
                                 ADMIN_USER, self.admin_password)
        if status != 200:
            raise StackError(f"creating the worker user answered {status}"
                             + _tail(self.root / "mlflow.log"))

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        self._procs.clear()
        if self._pg_data is not None:
            shutil.rmtree(self._pg_data, ignore_errors=True)
            self._pg_data = None

    # -- what the tests read back ---------------------------------------------------------

    def sql(self, database: str, query: str, args: tuple = ()) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user=PG_USER,
                                password=self.pg_password, dbname=database)
        try:
            with conn.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall()
        finally:
            conn.close()

    def dump_database(self, database: str) -> str:
        """Every row of every table of ``database`` as text (to search it for secrets)."""
        tables = self.sql(database, "SELECT table_name FROM information_schema.tables "
                                    "WHERE table_schema = 'public'")
        out = []
        for (table,) in tables:
            for row in self.sql(database, f'SELECT * FROM "{table}"'):
                out.append(f"{table}: " + " | ".join(
                    bytes(v).decode("latin-1") if isinstance(v, (bytes, memoryview)) else str(v)
                    for v in row))
        return "\n".join(out)

    def bucket_objects(self) -> dict[str, bytes]:
        s3 = self.s3_client()
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tests/support/devstack.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="", help="folder for the logs (default: a new temp folder)")
    args = p.parse_args(argv)
    with Stack(args.dir or None) as stack:
        print(f"# the stack is up (logs in {stack.root}); in each worker's shell:")
        for k, v in stack.worker_env.items():
            print(f"export {k}='{v}'")
        print(f"# a shared Optuna study: sweep.storage={stack.db_url('optuna')}")
        print("# Ctrl-C stops it all", flush=True)
        try:
            while all(proc.poll() is None for proc in stack._procs):
                time.sleep(1)
            print("a part of the stack exited; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
