"""Shared-storage fixtures for the worker tests: a Journal file, PostgreSQL and Redis.

The servers are the ones the development machines and CI run on loopback; override them with

    SIMSEARCH_TEST_POSTGRES   default postgresql://postgres@127.0.0.1:5432/test
    SIMSEARCH_TEST_REDIS      default redis://127.0.0.1:6379/0

Each PostgreSQL test gets a fresh database (created from the URL's one, dropped afterwards); each
Redis test a fresh key prefix (its keys deleted afterwards). A server that cannot be reached within
a short timeout makes the test skip with a reason naming the server and the address tried.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

POSTGRES_URL = os.environ.get("SIMSEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SIMSEARCH_TEST_REDIS", "redis://127.0.0.1:6379/0")
STORAGES = ("journal", "postgres", "redis")


def _reachable(name: str, url: str, default_port: int) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError as exc:
        pytest.skip(f"{name} not reachable at {host}:{port} ({exc}); set the URL with "
                    f"SIMSEARCH_TEST_{name.upper()}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped after the test."""
    _reachable("postgres", POSTGRES_URL, 5432)
    import psycopg2

    parts = urlsplit(POSTGRES_URL)
    admin_dsn = POSTGRES_URL.replace("+psycopg2", "").replace("+psycopg", "")
    name = f"simsearch_w_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg2.connect(admin_dsn, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"postgres at {parts.hostname}:{parts.port}: cannot connect ({exc})")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis journal URL with a fresh key prefix (``?prefix=…``), its keys deleted afterwards."""
    _reachable("redis", REDIS_URL, 6379)
    import redis

    prefix = f"simsearch-test-{uuid.uuid4().hex[:12]}:"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    sep = "&" if urlsplit(REDIS_URL).query else "?"
    try:
        yield f"{REDIS_URL}{sep}prefix={prefix}"
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=STORAGES)
def storage_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Each shared storage in turn: ``journal:FILE``, a fresh PostgreSQL database, Redis."""
    if request.param == "journal":
        return f"journal:{tmp_path / 'study.log'}"
    return request.getfixturevalue(f"{request.param}_url")
