"""Seeded synthetic retail tenants for scale simulations, written in bounded memory.

Memory is O(n_items + n_users + chunk_size), never O(n_interactions): interactions are drawn
and written chunk by chunk. Every random quantity comes from its own stream and is drawn with
`Generator.random` (one double per value, no per-call buffering), so the files are identical
for every `chunk_size`.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

import numpy as np
import numpy.typing as npt

from atlasrec.datasets.spec import (
    INTERACTIONS_FILE,
    INTERACTIONS_HEADER,
    ITEMS_FILE,
    ITEMS_HEADER,
    TenantDataset,
)
from atlasrec.errors import InvalidInputError
from atlasrec.tenancy import Region, SharingPolicy, validate_tenant_id

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

DEFAULT_CHUNK_SIZE = 262_144
SECONDS_PER_DAY = 86_400

SIZE_PRESETS: dict[str, tuple[int, int, int]] = {
    "small": (500, 50, 1_000),
    "medium": (20_000, 5_000, 100_000),
    "large": (100_000, 50_000, 1_000_000),
}
"""Size name -> (n_items, n_users, n_interactions)."""

EVENTS: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
EVENT_WEIGHTS: tuple[int, ...] = (1, 2, 3, 5)
_EVENT_CDF = np.cumsum([0.62, 0.20, 0.12, 0.06])
_TASTE_SHARE = 0.6
"""Share of interactions drawn from the user's tastes (the rest: the whole catalog).

A taste is the user's favourite category, or its hidden segment for a spec's `hidden_share`
of them."""

_ADJECTIVES = (
    "Classic", "Premium", "Everyday", "Essential", "Deluxe", "Compact",
    "Eco", "Pro", "Vintage", "Modern", "Lightweight", "Heavy-Duty",
)  # fmt: skip
_COLORS = (
    "black", "white", "navy", "charcoal", "olive", "sand",
    "red", "forest green", "sky blue", "natural",
)  # fmt: skip

# category -> (modifiers, product nouns, selling points)
_CATALOG: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "Apparel": (
        ("Organic Cotton", "Merino Wool", "Linen", "Fleece", "Denim", "Slim Fit"),
        ("Crew T-Shirt", "Hoodie", "Polo Shirt", "Chinos", "Rain Jacket", "Cardigan"),
        ("machine washable", "breathable", "pre-shrunk", "tag-free"),
    ),
    "Footwear": (
        ("Leather", "Suede", "Knit", "Waterproof", "Trail", "Memory Foam"),
        ("Running Shoes", "Chelsea Boots", "Sneakers", "Sandals", "Loafers", "Slippers"),
        ("cushioned sole", "non-slip grip", "wide fit available", "vegan materials"),
    ),
    "Kitchen": (
        ("Stainless Steel", "Cast Iron", "Non-Stick", "Bamboo", "Ceramic", "Copper"),
        ("Chef Knife", "Frying Pan", "Dutch Oven", "Cutting Board", "Saucepan", "Kettle"),
        ("dishwasher safe", "induction ready", "lifetime warranty", "oven safe to 260C"),
    ),
    "Home Decor": (
        ("Handwoven", "Rattan", "Glass", "Marble", "Velvet", "Oak"),
        ("Table Lamp", "Throw Pillow", "Wall Mirror", "Vase", "Picture Frame", "Rug"),
        ("handmade", "fade resistant", "easy to clean", "ships assembled"),
    ),
    "Bedding & Bath": (
        ("Egyptian Cotton", "Bamboo", "Percale", "Waffle Knit", "Sateen", "Microfiber"),
        ("Sheet Set", "Duvet Cover", "Bath Towel", "Bathrobe", "Pillowcase Pair", "Bath Mat"),
        ("400 thread count", "quick dry", "hypoallergenic", "OEKO-TEX certified"),
    ),
    "Electronics": (
        ("Wireless", "Bluetooth", "Noise-Cancelling", "Smart", "4K", "Portable"),
        ("Headphones", "Speaker", "Soundbar", "Streaming Stick", "Earbuds", "Projector"),
        ("30-hour battery", "voice assistant built in", "USB-C charging", "2-year warranty"),
    ),
    "Computers": (
        ("Mechanical", "Ergonomic", "Ultra-Slim", "Gaming", "Wireless", "USB-C"),
        ("Keyboard", "Mouse", "Laptop Stand", "Monitor", "Docking Station", "Webcam"),
        ("plug and play", "backlit", "adjustable height", "works with Mac and PC"),
    ),
    "Mobile Accessories": (
        ("MagSafe", "Rugged", "Clear", "Fast-Charge", "Braided", "Leather"),
        ("Phone Case", "Charger", "Power Bank", "Charging Cable", "Car Mount", "Screen Protector"),
        ("drop tested", "20W output", "slim profile", "wireless charging compatible"),
    ),
    "Beauty": (
        ("Hydrating", "Vitamin C", "Matte", "Mineral", "Overnight", "Tinted"),
        ("Face Serum", "Lipstick", "Moisturizer", "Sunscreen SPF 50", "Eye Cream", "Foundation"),
        ("fragrance free", "cruelty free", "dermatologist tested", "for all skin types"),
    ),
    "Personal Care": (
        ("Electric", "Sensitive", "Charcoal", "Travel", "Rechargeable", "Natural"),
        ("Toothbrush", "Shaver", "Hair Dryer", "Shampoo", "Deodorant", "Beard Trimmer"),
        ("long-lasting", "travel friendly", "sulfate free", "recyclable packaging"),
    ),
    "Sports & Outdoors": (
        ("Ultralight", "Insulated", "Waterproof", "Foldable", "Carbon", "All-Season"),
        ("Hiking Backpack", "Tent", "Sleeping Bag", "Water Bottle", "Camping Chair", "Headlamp"),
        ("packs small", "weather resistant", "BPA free", "reinforced seams"),
    ),
    "Fitness": (
        ("Adjustable", "Non-Slip", "Resistance", "Foam", "Smart", "Weighted"),
        ("Dumbbell Set", "Yoga Mat", "Jump Rope", "Kettlebell", "Foam Roller", "Fitness Tracker"),
        ("home gym ready", "sweat resistant", "space saving", "beginner friendly"),
    ),
    "Toys & Games": (
        ("Wooden", "Magnetic", "Remote Control", "Educational", "Plush", "Classic"),
        ("Building Blocks", "Puzzle", "Board Game", "Race Car", "Teddy Bear", "Train Set"),
        ("ages 3 and up", "non-toxic paint", "no batteries needed", "family favourite"),
    ),
    "Books": (
        ("Illustrated", "Hardcover", "Paperback", "Collector's", "Pocket", "Annotated"),
        ("Cookbook", "Mystery Novel", "Travel Guide", "Biography", "Poetry Anthology", "Atlas"),
        ("bestseller", "signed edition", "includes maps", "large print"),
    ),
    "Grocery": (
        ("Organic", "Single-Origin", "Cold-Pressed", "Gluten-Free", "Wildflower", "Sea Salt"),
        ("Coffee Beans", "Olive Oil", "Honey", "Granola", "Dark Chocolate", "Green Tea"),
        ("fair trade", "small batch", "no added sugar", "resealable pack"),
    ),
    "Pet Supplies": (
        ("Orthopedic", "Grain-Free", "Interactive", "Reflective", "Washable", "Chew-Proof"),
        ("Dog Bed", "Cat Tree", "Dog Leash", "Pet Food", "Cat Toy", "Pet Carrier"),
        ("vet recommended", "machine washable cover", "durable", "easy to clean"),
    ),
    "Garden": (
        ("Self-Watering", "Solar", "Galvanized", "Terracotta", "Expandable", "Ergonomic"),
        ("Planter", "Garden Hose", "Pruning Shears", "Path Lights", "Seed Kit", "Watering Can"),
        ("frost resistant", "UV stable", "rust proof", "easy assembly"),
    ),
    "Tools & Hardware": (
        ("Cordless", "Magnetic", "Precision", "Heavy-Duty", "Folding", "Ratcheting"),
        ("Drill Driver", "Screwdriver Set", "Tape Measure", "Socket Set", "Level", "Work Light"),
        ("battery included", "hard case", "professional grade", "lifetime warranty"),
    ),
    "Office Supplies": (
        ("Recycled", "Refillable", "Dotted", "Ergonomic", "Fine-Point", "Leather-Bound"),
        ("Notebook", "Gel Pens", "Desk Organizer", "Planner", "Stapler", "Office Chair"),
        ("acid-free paper", "smooth writing", "bulk pack", "easy refill"),
    ),
    "Jewelry & Watches": (
        ("Sterling Silver", "Gold-Plated", "Rose Gold", "Minimalist", "Automatic", "Pearl"),
        ("Necklace", "Hoop Earrings", "Bracelet", "Ring", "Wristwatch", "Pendant"),
        ("hypoallergenic", "gift boxed", "water resistant", "adjustable length"),
    ),
}
RETAIL_CATEGORIES: tuple[str, ...] = tuple(_CATALOG)

# Independent random streams, so each quantity is drawn identically whatever the chunking.
_SETUP, _ITEM_TEXT, _TIME, _USER, _MIX, _ITEM, _EVENT, _HIDDEN = range(8)
_N_STREAMS = 8  # spawned children are keyed by index: a new stream changes none before it
_ITEM_TEXT_DRAWS = 6  # adjective, modifier, noun, colour, selling point, model year


@dataclass(frozen=True)
class SyntheticTenantSpec:
    """Size, residency and randomness of one synthetic retail tenant."""

    tenant_id: str
    region: Region
    sharing: SharingPolicy
    n_items: int
    n_users: int
    n_interactions: int
    n_categories: int = 20
    popularity_exponent: float = 1.1
    activity_exponent: float = 1.2
    seed: int = 0
    start_ts: int = 1_700_000_000
    span_days: int = 90
    hidden_share: float = 0.0
    """Share of taste interactions drawn from the user's hidden segment, not its favourite
    category. Segments group items at random, and no item text names them: only a model
    that learns from the interactions can tell them (0: none; the files are unchanged)."""
    n_segments: int = 20


@dataclass(frozen=True)
class _Model:
    """Everything that is O(n_items + n_users): categories, popularity, user activity, taste."""

    item_cdf: FloatArray
    user_cdf: FloatArray
    categories: _Groups
    """Each item's category, each user's favourite."""
    segments: _Groups


@dataclass(frozen=True)
class _Groups:
    """Items grouped (by category or by hidden segment), and each user's group."""

    item_group: IntArray
    order: IntArray
    """Item indices sorted by group."""
    cdf: FloatArray
    """Per-group popularity CDFs laid end to end (`_taste_cdf`)."""
    end: IntArray
    user_group: IntArray

    def draw(self, user: IntArray, u: FloatArray) -> IntArray:
        """A popularity-weighted item from each user's group, by uniform draws `u`."""
        group = self.user_group[user]
        pos = np.searchsorted(self.cdf, group + u, side="right")
        pos = np.minimum(pos, self.end[group] - 1)
        picked: IntArray = self.order[pos]
        return picked


def generate_synthetic_tenant(
    spec: SyntheticTenantSpec, out_dir: Path, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> TenantDataset:
    """Write `out_dir/<tenant_id>/items.csv` and `interactions.csv` for `spec`.

    Item popularity and user activity follow power laws; every item id and every one of the
    `n_users` users appears exactly as specified; rows are sorted by (timestamp, user, item).
    """
    _validate(spec)
    if chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be positive, got {chunk_size}")
    streams = _streams(spec)
    model = _build_model(spec, streams[_SETUP], streams[_HIDDEN])
    folder = out_dir / spec.tenant_id
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ITEMS_FILE).open("w", encoding="utf-8", newline="") as f:
        _write_items(f, spec, model, streams[_ITEM_TEXT], chunk_size)
    with (folder / INTERACTIONS_FILE).open("w", encoding="utf-8", newline="") as f:
        _write_interactions(f, spec, model, streams, chunk_size)
    return TenantDataset(
        tenant_id=spec.tenant_id,
        name=f"Synthetic retail {spec.tenant_id}",
        region=spec.region,
        sharing=spec.sharing,
        items_csv=folder / ITEMS_FILE,
        interactions_csv=folder / INTERACTIONS_FILE,
        n_items=spec.n_items,
        n_users=spec.n_users,
        n_interactions=spec.n_interactions,
    )


@dataclass(frozen=True)
class SyntheticTruth:
    """What a synthetic tenant's users want: each user's favourite category, each item's.

    User `j` is `user_ids[j]` (`c000000`, ...), item `i` is `item_ids[i]` (`p000000`, ...).
    """

    item_category: IntArray
    user_favorite: IntArray
    item_segment: IntArray
    """Each item's hidden segment (`SyntheticTenantSpec.hidden_share`)."""
    user_segment: IntArray
    """Each user's hidden segment; -1 for all where the tenant has no hidden tastes."""

    @property
    def user_ids(self) -> list[str]:
        """The users' ids, as the interactions file names them."""
        return [f"c{j:06d}" for j in range(len(self.user_favorite))]

    @property
    def item_ids(self) -> list[str]:
        """The items' ids, as the catalog file names them."""
        return [f"p{i:06d}" for i in range(len(self.item_category))]


def synthetic_truth(spec: SyntheticTenantSpec) -> SyntheticTruth:
    """The latent preferences `generate_synthetic_tenant` drew the tenant's interactions from."""
    _validate(spec)
    streams = _streams(spec)
    model = _build_model(spec, streams[_SETUP], streams[_HIDDEN])
    categories, segments = model.categories, model.segments
    user_segment = (
        segments.user_group if spec.hidden_share > 0 else np.full_like(segments.user_group, -1)
    )
    return SyntheticTruth(
        categories.item_group, categories.user_group, segments.item_group, user_segment
    )


def _validate(spec: SyntheticTenantSpec) -> None:
    validate_tenant_id(spec.tenant_id)
    problems = []
    if spec.n_items < 1 or spec.n_users < 1:
        problems.append("n_items and n_users must be at least 1")
    if spec.n_interactions < spec.n_users:
        problems.append("n_interactions must be at least n_users (every user acts once)")
    if not 1 <= spec.n_categories <= len(RETAIL_CATEGORIES):
        problems.append(f"n_categories must be in 1..{len(RETAIL_CATEGORIES)}")
    if spec.popularity_exponent < 0 or spec.activity_exponent < 0:
        problems.append("exponents must be non-negative")
    if spec.span_days < 1:
        problems.append("span_days must be at least 1")
    if not 0.0 <= spec.hidden_share <= 1.0:
        problems.append("hidden_share must be in [0, 1]")
    if spec.n_segments < 1:
        problems.append("n_segments must be at least 1")
    if problems:
        raise InvalidInputError(f"synthetic tenant {spec.tenant_id!r}: " + "; ".join(problems))


def _streams(spec: SyntheticTenantSpec) -> list[np.random.Generator]:
    """One generator per quantity, seeded by the spec's seed and its tenant id."""
    root = np.random.SeedSequence([spec.seed, zlib.crc32(spec.tenant_id.encode())])
    return [np.random.Generator(np.random.PCG64(s)) for s in root.spawn(_N_STREAMS)]


def _power_law_weights(n: int, exponent: float, rng: np.random.Generator) -> FloatArray:
    """Weights rank^-exponent for `n` entities whose ranks are a random permutation."""
    ranks = rng.permutation(n).astype(np.float64) + 1.0
    weights: FloatArray = ranks**-exponent
    return weights


def _cdf(weights: FloatArray) -> FloatArray:
    cdf = np.cumsum(weights)
    result: FloatArray = cdf / cdf[-1]
    return result


def _build_model(
    spec: SyntheticTenantSpec, rng: np.random.Generator, hidden: np.random.Generator
) -> _Model:
    item_category = np.floor(rng.random(spec.n_items) * spec.n_categories).astype(np.int64)
    weights = _power_law_weights(spec.n_items, spec.popularity_exponent, rng)
    user_cdf = _cdf(_power_law_weights(spec.n_users, spec.activity_exponent, rng))
    categories = _groups(item_category, spec.n_categories, weights, rng.random(spec.n_users))
    item_segment = np.floor(hidden.random(spec.n_items) * spec.n_segments).astype(np.int64)
    segments = _groups(item_segment, spec.n_segments, weights, hidden.random(spec.n_users))
    return _Model(_cdf(weights), user_cdf, categories, segments)


def _groups(item_group: IntArray, n_groups: int, weights: FloatArray, u: FloatArray) -> _Groups:
    """Items grouped by `item_group`; each user dealt one of the groups that has items."""
    order = np.argsort(item_group, kind="stable").astype(np.int64)
    cdf, end = _taste_cdf(item_group[order], weights[order])
    present = np.flatnonzero(np.bincount(item_group, minlength=n_groups))
    user_group = present[np.floor(u * present.size).astype(np.int64)]
    return _Groups(item_group, order, cdf, end, user_group.astype(np.int64))


def _taste_cdf(sorted_cat: IntArray, sorted_w: FloatArray) -> tuple[FloatArray, IntArray]:
    """Per-category CDFs laid end to end, and each category's segment end.

    Items must be sorted by category; category c's CDF values lie in (c, c + 1].
    """
    cum = np.cumsum(sorted_w)
    sizes = np.bincount(sorted_cat)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    seg_total = np.where(sizes > 0, cum[np.maximum(ends - 1, 0)] - before, 1.0)
    seg_cdf = (cum - before[sorted_cat]) / seg_total[sorted_cat]
    seg_cdf[ends[sizes > 0] - 1] = 1.0
    taste_cdf: FloatArray = sorted_cat + seg_cdf
    return taste_cdf, ends.astype(np.int64)


def _pick(words: tuple[str, ...], u: float) -> str:
    return words[min(int(u * len(words)), len(words) - 1)]


def _item_rows(
    first: int, categories: IntArray, draws: FloatArray
) -> list[tuple[str, str, str, str, int]]:
    rows = []
    for offset, (cat, d) in enumerate(zip(categories.tolist(), draws.tolist(), strict=True)):
        category = RETAIL_CATEGORIES[cat]
        modifiers, nouns, points = _CATALOG[category]
        title = f"{_pick(_ADJECTIVES, d[0])} {_pick(modifiers, d[1])} {_pick(nouns, d[2])}"
        color = _pick(_COLORS, d[3])
        point_a = _pick(points, d[4])
        point_b = points[(points.index(point_a) + 1) % len(points)]
        lead = point_a[0].upper() + point_a[1:]
        description = f"{title} in {color}. {lead}, {point_b}. From our {category} range."
        year = 2015 + min(int(d[5] * 10), 9)
        rows.append((f"p{first + offset:06d}", title, category, description, year))
    return rows


def _write_items(
    f: TextIO,
    spec: SyntheticTenantSpec,
    model: _Model,
    rng: np.random.Generator,
    chunk_size: int,
) -> None:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(ITEMS_HEADER)
    for start in range(0, spec.n_items, chunk_size):
        stop = min(start + chunk_size, spec.n_items)
        draws = rng.random((stop - start, _ITEM_TEXT_DRAWS))
        writer.writerows(_item_rows(start, model.categories.item_group[start:stop], draws))


@dataclass(frozen=True)
class _Chunk:
    timestamp: IntArray
    user: IntArray
    item: IntArray
    event: IntArray

    def __len__(self) -> int:
        return int(self.timestamp.size)

    def take(self, index: IntArray | slice) -> _Chunk:
        return _Chunk(self.timestamp[index], self.user[index], self.item[index], self.event[index])

    @staticmethod
    def concat(a: _Chunk, b: _Chunk) -> _Chunk:
        return _Chunk(
            np.concatenate([a.timestamp, b.timestamp]),
            np.concatenate([a.user, b.user]),
            np.concatenate([a.item, b.item]),
            np.concatenate([a.event, b.event]),
        )


def _draw_chunk(
    spec: SyntheticTenantSpec,
    model: _Model,
    streams: list[np.random.Generator],
    start: int,
    stop: int,
) -> _Chunk:
    """Interactions `start..stop-1` of the tenant's stream (independent of chunk boundaries)."""
    n, total = stop - start, spec.n_interactions
    index = np.arange(start, stop, dtype=np.float64)
    # Stratified arrival times: event i falls in the i-th of `total` equal slices of the span.
    span = spec.span_days * SECONDS_PER_DAY
    offsets = np.floor((index + streams[_TIME].random(n)) * (span / total)).astype(np.int64)
    timestamp = spec.start_ts + np.minimum(offsets, span - 1)
    user = _draw_users(spec, model, streams[_USER].random(n), start, stop)
    mix = streams[_MIX].random(n)
    taste = mix < _TASTE_SHARE * (1.0 - spec.hidden_share)
    u = streams[_ITEM].random(n)
    item = np.minimum(np.searchsorted(model.item_cdf, u, side="right"), spec.n_items - 1)
    item[taste] = model.categories.draw(user[taste], u[taste])
    hidden = (mix < _TASTE_SHARE) & ~taste  # the event's own item draw, from its segment
    item[hidden] = model.segments.draw(user[hidden], u[hidden])
    event = np.searchsorted(_EVENT_CDF, streams[_EVENT].random(n), side="right")
    event = np.minimum(event, len(EVENTS) - 1).astype(np.int64)
    return _Chunk(timestamp, user, item, event)


def _draw_users(
    spec: SyntheticTenantSpec, model: _Model, u: FloatArray, start: int, stop: int
) -> IntArray:
    """Power-law users; user j is also pinned to event floor(j * N / n_users) so all appear."""
    user = np.searchsorted(model.user_cdf, u, side="right")
    user = np.minimum(user, spec.n_users - 1).astype(np.int64)
    n_users, total = spec.n_users, spec.n_interactions
    first = -(-start * n_users // total)
    last = -(-stop * n_users // total)
    pinned = np.arange(first, last, dtype=np.int64)
    user[pinned * total // n_users - start] = pinned
    return user


def _write_interactions(
    f: TextIO,
    spec: SyntheticTenantSpec,
    model: _Model,
    streams: list[np.random.Generator],
    chunk_size: int,
) -> None:
    """Draw and write the interactions chunk by chunk, sorted by (timestamp, user, item).

    Rows sharing a chunk's last timestamp wait for the next chunk, so no sort ever needs more
    than one chunk (plus one timestamp's rows) in memory.
    """
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(INTERACTIONS_HEADER)
    user_ids = np.array([f"c{j:06d}" for j in range(spec.n_users)], dtype=object)
    item_ids = np.array([f"p{i:06d}" for i in range(spec.n_items)], dtype=object)
    pending: _Chunk | None = None
    for start in range(0, spec.n_interactions, chunk_size):
        stop = min(start + chunk_size, spec.n_interactions)
        chunk = _draw_chunk(spec, model, streams, start, stop)
        if pending is not None:
            chunk = _Chunk.concat(pending, chunk)
        cut = len(chunk)
        if stop < spec.n_interactions:
            cut = int(np.searchsorted(chunk.timestamp, chunk.timestamp[-1], side="left"))
        _write_rows(writer, chunk.take(slice(0, cut)), user_ids, item_ids)
        pending = chunk.take(slice(cut, None))


class _RowWriter(Protocol):
    def writerows(self, rows: Iterable[Iterable[object]], /) -> None: ...


def _write_rows(
    writer: _RowWriter,
    chunk: _Chunk,
    user_ids: npt.NDArray[np.object_],
    item_ids: npt.NDArray[np.object_],
) -> None:
    if len(chunk) == 0:
        return
    order = np.lexsort((chunk.item, chunk.user, chunk.timestamp))
    c = chunk.take(order)
    events = np.array(EVENTS, dtype=object)[c.event]
    weights = np.array(EVENT_WEIGHTS, dtype=np.int64)[c.event]
    writer.writerows(
        zip(
            user_ids[c.user].tolist(),
            item_ids[c.item].tolist(),
            c.timestamp.tolist(),
            events.tolist(),
            weights.tolist(),
            strict=True,
        )
    )


_FLEET_SIZE_SHARES: dict[str, float] = {"small": 0.8, "medium": 0.15, "large": 0.05}


def synthetic_fleet(
    n_tenants: int, out_dir: Path, *, seed: int = 0, max_size: str = "medium"
) -> list[TenantDataset]:
    """Generate a seeded fleet: mostly small tenants, spread over all regions and policies.

    Sizes are drawn from small 80% / medium 15% / large 5% (renormalised up to `max_size`)
    and jittered by +-25%; regions and sharing policies are dealt round-robin, then shuffled.
    """
    if n_tenants < 1:
        raise InvalidInputError(f"n_tenants must be at least 1, got {n_tenants}")
    names = list(SIZE_PRESETS)
    if max_size not in SIZE_PRESETS:
        raise InvalidInputError(f"unknown size {max_size!r} (expected one of: {', '.join(names)})")
    allowed = names[: names.index(max_size) + 1]
    shares = np.array([_FLEET_SIZE_SHARES[s] for s in allowed])
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xF1EE7])))
    sizes = rng.choice(len(allowed), size=n_tenants, p=shares / shares.sum())
    all_regions, all_policies = list(Region), list(SharingPolicy)
    regions = rng.permutation(np.arange(n_tenants) % len(all_regions))
    policies = rng.permutation(np.arange(n_tenants) % len(all_policies))
    jitter = rng.uniform(0.75, 1.25, size=(n_tenants, 3))
    results = []
    for i in range(n_tenants):
        size = allowed[int(sizes[i])]
        n_items, n_users, n_rows = (
            max(1, round(base * f)) for base, f in zip(SIZE_PRESETS[size], jitter[i], strict=True)
        )
        spec = SyntheticTenantSpec(
            tenant_id=f"shop-{i:04d}",
            region=all_regions[int(regions[i])],
            sharing=all_policies[int(policies[i])],
            n_items=n_items,
            n_users=n_users,
            n_interactions=max(n_rows, n_users),
            seed=seed * 1_000_003 + i,
        )
        results.append(generate_synthetic_tenant(spec, out_dir))
    return results
