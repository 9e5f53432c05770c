"""The health of one pool member: active checks and passive ejection, as a pure state machine (time passed in).

Two independent verdicts decide whether a member may take requests:
- active checks (a probe every `check_interval`): `unhealthy_threshold` failed probes in a row take the member
  down, `healthy_threshold` passed probes in a row bring it back up;
- passive ejection (what real requests saw): `eject_after` failed requests in a row eject the member for a
  cooldown that doubles with each ejection in a row (`eject_cooldown`, capped at `max_eject_cooldown`). A request
  that succeeds ends the run of failures and of ejections.

The pool performs the probes and the requests; this module only keeps the counts and says yes or no.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import httpx

from somner.settings.models import PoolSettings


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2
    eject_after: int = 3
    eject_cooldown: float = 10.0
    max_eject_cooldown: float = 300.0

    @classmethod
    def of(cls, settings: PoolSettings) -> HealthPolicy:
        return cls(
            healthy_threshold=settings.healthy_threshold,
            unhealthy_threshold=settings.unhealthy_threshold,
            eject_after=settings.eject_after,
            eject_cooldown=settings.eject_cooldown,
            max_eject_cooldown=settings.max_eject_cooldown,
        )

    def cooldown(self, ejections_in_row: int) -> float:
        """How long the n-th ejection in a row lasts (n >= 1): the base cooldown doubled n-1 times, capped."""
        return float(min(self.eject_cooldown * 2 ** max(ejections_in_row - 1, 0), self.max_eject_cooldown))


@dataclass(slots=True)
class MemberHealth:
    policy: HealthPolicy
    up: bool = True  # the active checks' verdict; optimistic until a probe says otherwise
    passes_in_row: int = 0
    check_failures_in_row: int = 0
    failures_in_row: int = 0  # requests
    ejections_in_row: int = 0
    ejections: int = 0  # ever, for the admin view
    ejected_until: float = 0.0
    last_check: float | None = None
    last_check_error: str | None = None

    def usable(self, now: float) -> bool:
        return self.up and not self.ejected(now)

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def check_passed(self, now: float) -> bool:
        """Record a passed probe; True when it brings the member back up."""
        self.last_check, self.last_check_error = now, None
        self.check_failures_in_row = 0
        self.passes_in_row += 1
        if not self.up and self.passes_in_row >= self.policy.healthy_threshold:
            self.up = True
            return True
        return False

    def check_failed(self, now: float, why: str) -> bool:
        """Record a failed probe; True when it takes the member down."""
        self.last_check, self.last_check_error = now, why
        self.passes_in_row = 0
        self.check_failures_in_row += 1
        if self.up and self.check_failures_in_row >= self.policy.unhealthy_threshold:
            self.up = False
            return True
        return False

    def mark_down(self, now: float, why: str) -> None:
        """Down at once (a member that could not start), until it passes `healthy_threshold` probes."""
        self.up, self.passes_in_row = False, 0
        self.last_check, self.last_check_error = now, why

    def request_failed(self, now: float) -> float | None:
        """Record a failed request; the cooldown when this failure ejects the member, else None."""
        self.failures_in_row += 1
        if self.failures_in_row < self.policy.eject_after or self.ejected(now):
            return None
        self.failures_in_row = 0
        self.ejections_in_row += 1
        self.ejections += 1
        cooldown = self.policy.cooldown(self.ejections_in_row)
        self.ejected_until = now + cooldown
        return cooldown

    def request_succeeded(self) -> None:
        self.failures_in_row = 0
        self.ejections_in_row = 0


class HttpProbe:
    """Asks a remote engine whether it serves: `GET /health` (llama-server, vLLM, Somner), or `GET /v1/models`
    where there is no such route. Its connections are its own (probes never queue behind requests)."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        self.base_url = base_url
        self.headers = headers
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def __call__(self) -> str | None:
        """None when the engine answers 200, else why not."""
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=self.headers)
        return await probe_http(self._client, self.timeout)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


async def probe_http(client: httpx.AsyncClient, limit: float) -> str | None:
    """One probe of a remote engine (see `HttpProbe`): None when it answers 200, else why not."""
    try:
        response = await client.get("/health", timeout=limit)
        if response.status_code == 404:
            response = await client.get("/v1/models", timeout=limit)
    except httpx.TimeoutException:
        return f"no answer within {limit:g}s"
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    with contextlib.suppress(httpx.HTTPError):
        await response.aclose()
    return None if response.status_code == 200 else f"answered {response.status_code}"
