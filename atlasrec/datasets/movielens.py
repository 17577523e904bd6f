"""Turn the vendored MovieLens ml-latest-small data set into a mix of distinct tenants.

Every movie belongs to exactly one tenant: the first tenant in `MOVIELENS_TENANTS` (priority
order) whose genre family contains one of the movie's genres. Movies with "(no genres listed)"
are dropped. Every MovieLens user belongs to exactly one tenant: the one whose catalog they rate
most *relative to that catalog's share of all ratings* (raw counts would send almost every user
to the biggest catalog). Sparse tenants keep only their top users by in-catalog ratings; the
others fall back to their next-best non-sparse tenant. Users with fewer than
`MIN_USER_INTERACTIONS` ratings in their tenant's catalog are dropped.
"""

from __future__ import annotations

import csv
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from atlasrec.datasets.spec import (
    INTERACTIONS_FILE,
    INTERACTIONS_HEADER,
    ITEMS_FILE,
    ITEMS_HEADER,
    TenantDataset,
    format_tenant_table,
)
from atlasrec.errors import InvalidInputError
from atlasrec.tenancy import Region, SharingPolicy, validate_tenant_id

MOVIELENS_DIR: Path = Path(__file__).resolve().parent / "data" / "ml-latest-small"
MIN_USER_INTERACTIONS = 3
MIN_TENANT_USERS = 3
MAX_TAGS = 5
NO_GENRES = "(no genres listed)"
_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")


@dataclass(frozen=True)
class MovieLensTenant:
    """A tenant carved out of MovieLens: its genre family and, if sparse, its user cap."""

    tenant_id: str
    name: str
    region: Region
    sharing: SharingPolicy
    genres: tuple[str, ...]
    max_users: int | None = None


# In catalog priority order: a movie goes to the first tenant whose family contains one of its
# genres, so the small families come first and the broad ones (Comedy, Drama) last.
MOVIELENS_TENANTS: tuple[MovieLensTenant, ...] = (
    MovieLensTenant(
        "ml-docs",
        "MovieLens documentaries & history",
        Region.IN,
        SharingPolicy.GLOBAL,
        ("Documentary", "War", "Film-Noir"),
        max_users=40,
    ),
    MovieLensTenant(
        "ml-western",
        "MovieLens westerns",
        Region.SG,
        SharingPolicy.SOLO,
        ("Western",),
        max_users=30,
    ),
    MovieLensTenant(
        "ml-family",
        "MovieLens family & animation",
        Region.US,
        SharingPolicy.GLOBAL,
        ("Animation", "Children", "Fantasy"),
    ),
    MovieLensTenant(
        "ml-action",
        "MovieLens action & sci-fi",
        Region.US,
        SharingPolicy.REGIONAL,
        ("Action", "Adventure", "Sci-Fi", "IMAX"),
    ),
    MovieLensTenant(
        "ml-thrill",
        "MovieLens thriller, crime & horror",
        Region.EU,
        SharingPolicy.SOLO,
        ("Thriller", "Crime", "Mystery", "Horror"),
    ),
    MovieLensTenant(
        "ml-comedy",
        "MovieLens comedy & musicals",
        Region.IN,
        SharingPolicy.REGIONAL,
        ("Comedy", "Musical"),
    ),
    MovieLensTenant(
        "ml-drama",
        "MovieLens drama & romance",
        Region.EU,
        SharingPolicy.GLOBAL,
        ("Drama", "Romance"),
    ),
)


@dataclass(frozen=True)
class _Movie:
    movie_id: int
    title: str
    year: str
    genres: tuple[str, ...]


@dataclass(frozen=True)
class _Rating:
    user_id: int
    movie_id: int
    timestamp: int
    rating: str


def build_movielens_tenant_mix(
    out_dir: Path,
    *,
    data_dir: Path = MOVIELENS_DIR,
    seed: int = 0,
    tenants: Sequence[MovieLensTenant] = MOVIELENS_TENANTS,
) -> list[TenantDataset]:
    """Write one items.csv and interactions.csv per tenant under `out_dir/<tenant_id>/`.

    The output is a pure function of the input files, `tenants` and `seed` (the seed only
    breaks ties between users ranked equally for a sparse tenant's capped seats).
    """
    _check_tenants(tenants)
    movies = _read_movies(data_dir / "movies.csv")
    tags = _read_top_tags(data_dir / "tags.csv")
    ratings = _read_ratings(data_dir / "ratings.csv")
    catalog = _assign_catalogs(movies.values(), tenants)
    counts = _count_user_ratings(ratings, catalog)
    users = _assign_users(counts, tenants, seed)
    by_tenant: dict[str, list[_Rating]] = defaultdict(list)
    for r in ratings:
        tenant_id = catalog.get(r.movie_id)
        if tenant_id is not None and users.get(r.user_id) == tenant_id:
            by_tenant[tenant_id].append(r)
    results = []
    for tenant in tenants:
        folder = out_dir / tenant.tenant_id
        folder.mkdir(parents=True, exist_ok=True)
        tenant_movies = [m for m in movies.values() if catalog.get(m.movie_id) == tenant.tenant_id]
        n_items = _write_items(folder / ITEMS_FILE, tenant_movies, tenant, tags)
        n_users, n_rows = _write_interactions(
            folder / INTERACTIONS_FILE, by_tenant[tenant.tenant_id]
        )
        results.append(
            TenantDataset(
                tenant_id=tenant.tenant_id,
                name=tenant.name,
                region=tenant.region,
                sharing=tenant.sharing,
                items_csv=folder / ITEMS_FILE,
                interactions_csv=folder / INTERACTIONS_FILE,
                n_items=n_items,
                n_users=n_users,
                n_interactions=n_rows,
            )
        )
    return results


def _check_tenants(tenants: Sequence[MovieLensTenant]) -> None:
    ids = [validate_tenant_id(t.tenant_id) for t in tenants]
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"duplicate tenant ids in {ids}")
    if all(t.max_users is not None for t in tenants):
        raise InvalidInputError("at least one tenant must have no user cap")


def _split_title(raw: str) -> tuple[str, str]:
    """Split "Heat (1995)" into ("Heat", "1995"); titles without a year keep year ""."""
    match = _YEAR_SUFFIX.search(raw)
    if match is None:
        return raw.strip(), ""
    return raw[: match.start()].strip(), match.group(1)


def _read_movies(path: Path) -> dict[int, _Movie]:
    movies: dict[int, _Movie] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            title, year = _split_title(row["title"])
            genres = tuple(g for g in row["genres"].split("|") if g and g != NO_GENRES)
            movies[int(row["movieId"])] = _Movie(int(row["movieId"]), title, year, genres)
    return movies


def _read_top_tags(path: Path) -> dict[int, tuple[str, ...]]:
    """Each movie's up to `MAX_TAGS` most frequent tags, lowercased (ties: alphabetical)."""
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            tag = " ".join(row["tag"].lower().split())
            if tag:
                counts[int(row["movieId"])][tag] += 1
    return {
        movie_id: tuple(t for t, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TAGS])
        for movie_id, c in counts.items()
    }


def _read_ratings(path: Path) -> list[_Rating]:
    with path.open(encoding="utf-8", newline="") as f:
        return [
            _Rating(int(row["userId"]), int(row["movieId"]), int(row["timestamp"]), row["rating"])
            for row in csv.DictReader(f)
        ]


def _assign_catalogs(
    movies: Iterable[_Movie], tenants: Sequence[MovieLensTenant]
) -> dict[int, str]:
    """Map each movie to the first tenant (priority order) whose family has one of its genres."""
    catalog: dict[int, str] = {}
    for movie in movies:
        for tenant in tenants:
            if any(g in tenant.genres for g in movie.genres):
                catalog[movie.movie_id] = tenant.tenant_id
                break
    return catalog


def _count_user_ratings(
    ratings: Iterable[_Rating], catalog: Mapping[int, str]
) -> dict[int, Counter[str]]:
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    for r in ratings:
        tenant_id = catalog.get(r.movie_id)
        if tenant_id is not None:
            counts[r.user_id][tenant_id] += 1
    return counts


def _preferences(
    counts: Mapping[int, Counter[str]], tenants: Sequence[MovieLensTenant]
) -> dict[int, list[str]]:
    """Each user's tenants, best first, by ratings relative to the catalog's rating share."""
    totals: Counter[str] = Counter()
    for c in counts.values():
        totals.update(c)
    order = {t.tenant_id: i for i, t in enumerate(tenants)}
    prefs: dict[int, list[str]] = {}
    for user, c in counts.items():
        rated = [t for t in order if c[t] > 0]
        prefs[user] = sorted(rated, key=lambda t: (-Fraction(c[t], totals[t]), order[t]))
    return prefs


def _assign_users(
    counts: Mapping[int, Counter[str]], tenants: Sequence[MovieLensTenant], seed: int
) -> dict[int, str]:
    """Give each user one tenant; apply sparse caps, then drop users with too few ratings."""
    prefs = _preferences(counts, tenants)
    tie_rank = sorted(prefs)
    random.Random(seed).shuffle(tie_rank)
    rank = {user: i for i, user in enumerate(tie_rank)}
    capped = {t.tenant_id: t.max_users for t in tenants if t.max_users is not None}
    assigned = {user: p[0] for user, p in prefs.items()}
    for tenant_id, cap in capped.items():
        members = sorted(
            (u for u, t in assigned.items() if t == tenant_id),
            key=lambda u: (-counts[u][tenant_id], rank[u]),
        )
        for user in members[cap:]:
            fallback = next((t for t in prefs[user] if t not in capped), None)
            if fallback is None:
                del assigned[user]
            else:
                assigned[user] = fallback
    kept = {u: t for u, t in assigned.items() if counts[u][t] >= MIN_USER_INTERACTIONS}
    _check_user_bases(kept, tenants)
    return kept


def _check_user_bases(assigned: Mapping[int, str], tenants: Sequence[MovieLensTenant]) -> None:
    sizes = Counter(assigned.values())
    small = [t.tenant_id for t in tenants if sizes[t.tenant_id] < MIN_TENANT_USERS]
    if small:
        raise InvalidInputError(
            f"tenants {small} would have fewer than {MIN_TENANT_USERS} users: "
            "adjust their genre families"
        )


def _description(movie: _Movie, tags: tuple[str, ...]) -> str:
    text = f"Genres: {', '.join(movie.genres)}."
    if tags:
        text += f" Tags: {', '.join(tags)}."
    return text


def _write_items(
    path: Path,
    movies: Sequence[_Movie],
    tenant: MovieLensTenant,
    tags: Mapping[int, tuple[str, ...]],
) -> int:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(ITEMS_HEADER)
        for movie in sorted(movies, key=lambda m: m.movie_id):
            category = next(g for g in movie.genres if g in tenant.genres)
            writer.writerow(
                (
                    f"m{movie.movie_id}",
                    movie.title,
                    category,
                    _description(movie, tags.get(movie.movie_id, ())),
                    movie.year,
                )
            )
    return len(movies)


def _write_interactions(path: Path, ratings: Sequence[_Rating]) -> tuple[int, int]:
    """Write ratings sorted by (timestamp, user, item); return (distinct users, rows)."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(INTERACTIONS_HEADER)
        for r in sorted(ratings, key=lambda r: (r.timestamp, r.user_id, r.movie_id)):
            writer.writerow((f"u{r.user_id}", f"m{r.movie_id}", r.timestamp, "rating", r.rating))
    return len({r.user_id for r in ratings}), len(ratings)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the mix into the folder given as the only argument and print the tenant table."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m atlasrec.datasets OUT_DIR", file=sys.stderr)
        return 2
    print(format_tenant_table(build_movielens_tenant_mix(Path(args[0]))))
    return 0
