"""Runtime keys across replicas: two `tollway serve` processes on one redis-server. A key
made on one works on the other, a revocation on one is refused by the other within a second
(the key book's version poll), and the `tollway keys` CLI drives the whole round trip."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import openai

from tests.e2e import test_guards_redis as guards
from tests.e2e.test_guards_redis import MSG, Gateways
from tests.e2e.test_stream_cuts import wait_until

# The two-process fixtures of the guards' tests: a mock provider, and `tollway serve`s.
mock_url = guards.mock_url
gateways = guards.gateways

STRICT = "identity: {unknown_keys: reject}"


def works(url: str, secret: str) -> bool:
    """True if the key is accepted; False on the 401 of a refused key."""
    try:
        openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0).chat.completions \
            .create(model="gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
    except openai.AuthenticationError:
        return False
    return True


def refused_within(url: str, secret: str, limit_s: float) -> float:
    start = time.monotonic()
    wait_until(lambda: not works(url, secret), timeout=limit_s)
    return time.monotonic() - start


def test_revoked_on_one_replica_refused_by_the_other(gateways: Callable[..., Gateways],
                                                     ) -> None:
    g = gateways(STRICT)
    made = g.admin(0, "POST", "/admin/keys", json={"agent": "support-bot"}).json()
    secret = made["secret"]
    assert works(g.urls[0], secret)  # the replica that made it knows at once
    wait_until(lambda: works(g.urls[1], secret), timeout=1.0)
    listed = g.admin(1, "GET", "/admin/keys").json()["keys"]
    assert [k["id"] for k in listed] == [made["id"]]
    for _ in range(3):  # measured: how long the other replica goes on accepting it
        revoked = g.admin(0, "DELETE", f"/admin/keys/{made['id']}")
        assert revoked.status_code == 200
        took = refused_within(g.urls[1], secret, 1.0)
        assert not works(g.urls[0], secret)
        print(f"revocation reached the other replica in {took * 1000:.0f} ms")
        made = g.admin(1, "POST", "/admin/keys", json={"agent": "support-bot"}).json()
        secret = made["secret"]
        wait_until(lambda s=secret: works(g.urls[0], s), timeout=1.0)


def test_rotation_across_replicas(gateways: Callable[..., Gateways]) -> None:
    g = gateways(STRICT)
    made = g.admin(0, "POST", "/admin/keys", json={"agent": "support-bot"}).json()
    wait_until(lambda: works(g.urls[1], made["secret"]), timeout=1.0)
    r = g.admin(1, "POST", f"/admin/keys/{made['id']}/rotate", json={"grace_s": 1.5}).json()
    new = r["secret"]
    wait_until(lambda: works(g.urls[0], new), timeout=1.0)
    assert works(g.urls[0], made["secret"])  # in its grace
    refused_within(g.urls[0], made["secret"], 3.0)  # after it
    assert works(g.urls[0], new) and works(g.urls[1], new)


def tollway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tollway", "keys", *args],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "TOLLWAY_ADMIN_KEY": "adm"})


def test_cli_round_trip(gateways: Callable[..., Gateways]) -> None:
    g = gateways(STRICT)
    at = ["--url", g.admin_urls[0]]
    made = tollway("create", "--agent", "support-bot", "--model", "gpt-4o*", "--rpm", "100",
                   "--expires-in", "1h", "--label", "cli", *at)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()  # stdout is the secret alone
    assert secret.startswith("sk-tw-") and secret not in made.stderr
    key_id = made.stderr.split()[0]
    assert key_id.startswith("key_") and "agent=support-bot" in made.stderr
    wait_until(lambda: works(g.urls[1], secret), timeout=1.0)
    listed = tollway("list", "--agent", "support-bot", *at)
    assert listed.returncode == 0 and key_id in listed.stdout and "gpt-4o*" in listed.stdout
    assert secret not in listed.stdout
    rotated = tollway("rotate", key_id, "--grace", "0", *at)
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new.startswith("sk-tw-") and new != secret
    refused_within(g.urls[1], secret, 1.0)
    wait_until(lambda: works(g.urls[1], new), timeout=1.0)
    revoked = tollway("revoke", key_id, *at)
    assert revoked.returncode == 0 and "revoked" in revoked.stderr
    refused_within(g.urls[1], new, 1.0)
    bad = tollway("create", "--agent", "mallory", *at)
    assert bad.returncode == 1 and "no agent 'mallory'" in bad.stderr
    denied = subprocess.run([sys.executable, "-m", "tollway", "keys", "list", "-c", os.devnull,
                             *at],
                            capture_output=True, text=True, timeout=30,
                            env={k: v for k, v in os.environ.items()
                                 if k != "TOLLWAY_ADMIN_KEY"})
    assert denied.returncode == 1
