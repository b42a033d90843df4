"""Fixtures for the Durable Task Scheduler SDK suite (durabletask-azuremanaged).

* ``sidecar``        - one sidecar for the session: free loopback ports, a SQLite file in a
                       temporary directory (removed at the end; KEEP_SIDECAR_DIR=1 keeps it).
* ``connection_string(hub)`` - the string an app written for the DTS emulator carries,
                       pointing at this sidecar.
* ``dts_kwargs(cs)`` - the constructor arguments the SDK takes for such a string (the
                       Python package has no connection-string parser; its samples map an
                       endpoint and a hub name to these arguments the same way).
"""

from __future__ import annotations

from typing import Any

import pytest

# tests/python/_sidecar.py (pytest.ini puts tests/python on the path).
from _sidecar import add_log_tails, find_sidecar_binary, sidecar_in_temp_dir


@pytest.fixture(scope="session")
def sidecar():
    with sidecar_in_temp_dir("dts-sdk-", find_sidecar_binary(), http=False, log_level="warn",
                             sqlite_suffix=".sqlite") as sc:
        yield sc


@pytest.fixture(scope="session")
def connection_string(sidecar):
    def make(hub: str) -> str:
        # Exactly the emulator's form, with the sidecar's port instead of the emulator's.
        return f"Endpoint=http://localhost:{sidecar.port};Authentication=None;TaskHub={hub}"
    return make


def dts_kwargs(connection_string: str) -> dict[str, Any]:
    """``host_address``/``taskhub``/``token_credential``/``secure_channel`` for a DTS
    connection string with ``Authentication=None``."""
    parts = {}
    for item in connection_string.split(";"):
        if item.strip():
            key, _, value = item.partition("=")
            parts[key.strip().lower()] = value.strip()
    if parts.get("authentication", "").lower() != "none":
        raise ValueError(f"only Authentication=None is used here: {connection_string!r}")
    endpoint = parts["endpoint"]
    return {
        # The SDK strips http:// and then opens an insecure channel.
        "host_address": endpoint,
        "taskhub": parts["taskhub"],
        "token_credential": None,
        "secure_channel": endpoint.lower().startswith("https://"),
    }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    add_log_tails(item, outcome.get_result())
