"""A click simulator: users with known preferences click a served list by a known model.

The tenant is a synthetic one (`atlasrec.datasets.synthetic`), whose interactions were drawn
from each user's favourite category and, for a share of them, its hidden segment (a latent
grouping that no item text names); `synthetic_truth` gives those latent preferences back.
Clicks follow the position-based model (Craswell et al., 2008): an item at 0-based position
`p` is examined with probability `1 / (p + 1) ** position_bias`, and an examined item is
clicked with its attractiveness: `base * (1 + lift)` in the user's favourite category,
`base * (1 + hidden_lift)` in its hidden segment (both: the sum of lifts), `base` else. A
model that reads tastes off item text earns the category's lift; only one that learned
from the interactions earns the segment's. A click is a purchase with probability
`purchase_rate`.

The simulator sends real HTTP traffic: `POST /v1/recommendations` for a user, then the
clicks and purchases as `POST /v1/events` naming the request's `request_id` and each item's
`position`. It reports what each served model version got (`atlasrec simulate clicks`).
"""

from __future__ import annotations

import csv
import json
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from atlasrec.datasets.synthetic import (
    SyntheticTenantSpec,
    SyntheticTruth,
    generate_synthetic_tenant,
)
from atlasrec.errors import InvalidInputError
from atlasrec.files import private_folder, write_atomic
from atlasrec.ingest import ingest
from atlasrec.platform import Platform
from atlasrec.tenancy import Region, SharingPolicy, validate_tenant_id

K = 10


class Http(Protocol):
    """What the simulator needs of an HTTP client (`httpx.Client`, FastAPI's TestClient)."""

    def post(self, url: str, *, json: Any, headers: dict[str, str]) -> Any:
        """POST a JSON body."""


@dataclass(frozen=True)
class ClickModel:
    """The position-based click model over a synthetic tenant's latent preferences."""

    truth: SyntheticTruth
    base: float = 0.03
    lift: float = 8.0
    hidden_lift: float = 8.0
    """Lift of the user's hidden segment (none where the tenant has no hidden tastes)."""
    position_bias: float = 1.0
    purchase_rate: float = 0.2
    activity_shape: float = 0.0
    """Users' click propensity: 0 for all alike; else each user's attractiveness is scaled by
    a Gamma(shape, 1 / shape) draw (mean 1; 0.5 makes heavy and light clickers, as real
    traffic has: the between-user variance an A/B test must average away)."""

    @cached_property
    def activity(self) -> np.ndarray:
        """Each user's click propensity (fixed per tenant: drawn from a seeded generator)."""
        n = len(self.truth.user_favorite)
        if self.activity_shape <= 0:
            return np.ones(n)
        rng = np.random.default_rng(20_261_207)
        return rng.gamma(self.activity_shape, 1 / self.activity_shape, n)

    def click_probabilities(self, user: int, items: list[int]) -> np.ndarray:
        """P(click) of each item at its position in the list shown to `user`."""
        positions = np.arange(len(items), dtype=np.float64)
        examined = 1.0 / (positions + 1.0) ** self.position_bias
        index = np.asarray(items, dtype=np.int64)
        liked = self.truth.item_category[index] == self.truth.user_favorite[user]
        hidden = self.truth.item_segment[index] == self.truth.user_segment[user]
        lift = 1.0 + self.lift * liked + self.hidden_lift * hidden
        attract = self.base * lift * self.activity[user]
        return np.asarray(examined * np.minimum(attract, 1.0), dtype=np.float64)


@dataclass
class ArmTally:
    """What one served model version got."""

    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    purchases: int = 0
    clicks_at: list[int] = field(default_factory=lambda: [0] * K)

    def add(self, shown: int, events: list[dict[str, Any]]) -> None:
        """Count one served list of `shown` items and the events it drew."""
        self.requests += 1
        self.impressions += shown
        for event in events:
            self.clicks += event["event"] == "click"
            self.purchases += event["event"] == "purchase"
            if event["event"] == "click":
                self.clicks_at[event["position"]] += 1

    def as_dict(self) -> dict[str, Any]:
        """The tally with its CTR."""
        ctr = self.clicks / self.impressions if self.impressions else 0.0
        return {**self.__dict__, "ctr": ctr}


@dataclass
class Report:
    """The simulation's outcome: per model version, and the requests that failed."""

    versions: dict[str, ArmTally] = field(default_factory=lambda: defaultdict(ArmTally))
    arms: dict[str, ArmTally] = field(default_factory=lambda: defaultdict(ArmTally))
    """By experiment arm (`A`, `B`, ... or `AB` for interleaved lists), inside an experiment."""
    failed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {
            "versions": {v: t.as_dict() for v, t in self.versions.items()},
            "arms": {a: t.as_dict() for a, t in self.arms.items()},
            "failed": dict(self.failed),
            "seconds": round(self.seconds, 2),
        }


def simulate(
    client: Http,
    api_key: str,
    model: ClickModel,
    *,
    requests: int,
    seed: int = 0,
    concurrency: int = 1,
) -> Report:
    """`requests` recommendations for random users, each followed by its users' clicks.

    Request `i` draws its user and clicks from its own generator (`seed`, `i`), so the
    traffic is the same whatever `concurrency` (users sending at once; `client` must be
    thread-safe above 1, as `httpx.Client` is).
    """
    session = _Session(client, {"Authorization": f"Bearer {api_key}"}, model)
    started = time.perf_counter()
    if concurrency <= 1:
        for i in range(requests):
            session.one(np.random.default_rng((seed, i)))
    else:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="clicks") as pool:
            done = [
                pool.submit(session.one, np.random.default_rng((seed, i))) for i in range(requests)
            ]
            for future in done:
                future.result()
    session.report.seconds = time.perf_counter() - started
    return session.report


class _Session:
    """One simulation's client, users and report (shared by its threads)."""

    def __init__(self, client: Http, headers: dict[str, str], model: ClickModel) -> None:
        self.client, self.headers, self.model = client, headers, model
        self.user_ids = model.truth.user_ids
        self.item_index = {i: n for n, i in enumerate(model.truth.item_ids)}
        self.report = Report()
        self._lock = threading.Lock()

    def one(self, rng: np.random.Generator) -> None:
        """A recommendation for a random user, then the events of its clicks."""
        user = int(rng.integers(len(self.user_ids)))
        body = {"user_id": self.user_ids[user], "k": K}
        served = _post(self.client, "/v1/recommendations", body, self.headers)
        if served.status_code != 200:
            self._failed(f"recommendations {served.status_code}")
            return
        answer = served.json()
        shown = [i["item_id"] for i in answer["items"]]
        user_id = self.user_ids[user]
        events = _outcomes(rng, self.model, user, user_id, shown, self.item_index, answer)
        with self._lock:
            tallies = [self.report.versions[answer["model_version"]]]
            if answer.get("experiment"):
                tallies.append(self.report.arms[answer["experiment"]["arm"]])
            for tally in tallies:
                tally.add(len(shown), events)
        if events:
            answered = _post(self.client, "/v1/events", {"events": events}, self.headers)
            if answered.status_code != 202:
                self._failed(f"events {answered.status_code}")

    def _failed(self, what: str) -> None:
        with self._lock:
            self.report.failed[what] += 1


def _post(client: Http, url: str, body: Any, headers: dict[str, str]) -> Any:
    """POST, sent again once if the server closed the kept-alive connection under it.

    A server may close an idle connection just as a request goes out on it (uvicorn's
    keep-alive timeout): the request was not read, and goes out again on a new connection.
    """
    try:
        return client.post(url, json=body, headers=headers)
    except httpx.RemoteProtocolError:
        return client.post(url, json=body, headers=headers)


def _outcomes(
    rng: np.random.Generator,
    model: ClickModel,
    user: int,
    user_id: str,
    shown: list[str],
    item_index: dict[str, int],
    body: dict[str, Any],
) -> list[dict[str, Any]]:
    """The clicks (and purchases) a user makes on one served list, as events."""
    known = [(p, item_index[i]) for p, i in enumerate(shown) if i in item_index]
    if not known:
        return []
    probabilities = model.click_probabilities(user, [i for _, i in known])
    events = []
    for (position, _), p in zip(known, probabilities, strict=True):
        if rng.random() >= p:
            continue
        for event in ("click", "purchase") if rng.random() < model.purchase_rate else ("click",):
            events.append(
                {
                    "user_id": user_id,
                    "item_id": shown[position],
                    "event": event,
                    "request_id": body["request_id"],
                    "position": position,
                }
            )
    return events


SIM_FOLDER = "simulations"


@dataclass(frozen=True)
class SimTenant:
    """A synthetic tenant set up for the simulator: its spec and API key."""

    spec: SyntheticTenantSpec
    api_key: str


def create_sim_tenant(
    platform: Platform, spec: SyntheticTenantSpec, *, actor: str, interactions: bool = True
) -> SimTenant:
    """Register, generate and ingest a synthetic tenant; keep its spec and key for `load`.

    Without `interactions` only its catalog is ingested (`sim_folder` keeps the file).
    """
    _, issued = platform.create_tenant(
        spec.tenant_id, region=spec.region, sharing=spec.sharing, actor=actor
    )
    api_key = issued.api_key
    folder = platform.settings.home / SIM_FOLDER
    private_folder(folder)
    data = generate_synthetic_tenant(spec, folder)
    ingest(
        platform.plane(spec.region),
        platform.scope(spec.tenant_id),
        secret=platform.secret,
        actor=actor,
        items=data.items_csv,
        interactions=data.interactions_csv if interactions else None,
    )
    fields = {**asdict(spec), "region": spec.region.value, "sharing": spec.sharing.value}
    record = json.dumps({"spec": fields, "api_key": api_key}).encode()
    write_atomic(folder / f"{spec.tenant_id}.json", record)
    return SimTenant(spec, api_key)


def load_sim_tenant(platform: Platform, tenant_id: str) -> SimTenant:
    """A tenant `create_sim_tenant` set up in this home."""
    path = platform.settings.home / SIM_FOLDER / f"{validate_tenant_id(tenant_id)}.json"
    if not path.is_file():
        raise InvalidInputError(
            f"tenant {tenant_id!r} is not a simulated tenant of this home "
            "(create one with `atlasrec simulate tenant`)"
        )
    held = json.loads(path.read_text())
    fields = held["spec"]
    spec = SyntheticTenantSpec(
        **{
            **fields,
            "region": Region(fields["region"]),
            "sharing": SharingPolicy(fields["sharing"]),
        }
    )
    return SimTenant(spec, str(held["api_key"]))


def sim_folder(platform: Platform, tenant_id: str) -> Path:
    """Where a simulated tenant's generated files are."""
    return platform.settings.home / SIM_FOLDER / validate_tenant_id(tenant_id)


def shuffled_interactions(
    source: Path,
    out: Path,
    *,
    copies: int,
    seed: int = 0,
) -> Path:
    """`copies` of an interactions file with its users permuted: popularity kept, tastes lost.

    Each copy is shifted later in time so that none repeats a row of another, and its rows
    belong to users of their own (`n<copy>-<user>`), so the simulated users' histories,
    which their recommendations are made from, stay their own: the noise reaches only what
    a model learns.
    """
    with source.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    users = [r[0] for r in rows]
    rng = np.random.default_rng(seed)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for copy in range(copies):
            rng.shuffle(users)
            shift = (copy + 1) * 10_000_000
            named = [f"n{copy}-{u}" for u in users]
            writer.writerows(
                [u, r[1], str(int(r[2]) + shift), *r[3:]] for r, u in zip(rows, named, strict=True)
            )
    return out
