"""Deterministic REES46-style sample files: same seed, same bytes.

The events are produced by DuckDB from `range()` with hash-based randomness, so a 10M-row file
takes seconds and the output does not depend on thread scheduling. Shape of the data:
- monthly files named like the real ones (`2019-Oct.csv`, `2019-Nov.csv.gz`), sorted by time;
- sessions of a few events (about 6 on average), now and then a pause of over an hour;
- users drawn with a skew, so many return across sessions and months;
- a funnel: mostly views; carting sessions end with cart additions; about 1-2% of events are
  purchases, of the product carted just before;
- per product a fixed brand, category and price; brand or category_code empty for some products;
- ids of the real magnitudes (user ids ~5.1e8, category ids ~2.05e18).
Files are written under a temporary name and renamed, so a scanner never sees half a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_BRANDS = (
    "samsung", "apple", "xiaomi", "huawei", "lucente", "sony", "lg", "bosch", "oppo", "acer", "lenovo",
    "cordiant", "respect", "indesit", "artel", "elenberg", "redmond", "philips", "vitek", "casio",
    "nokian", "canon", "tefal", "polaris", "asus", "hp", "jbl", "garmin", "logitech", "makita",
)
_CATEGORIES = (
    "electronics.smartphone", "electronics.audio.headphone", "electronics.video.tv", "computers.notebook",
    "appliances.kitchen.washer", "appliances.kitchen.refrigerators", "appliances.environment.vacuum",
    "apparel.shoes", "apparel.shoes.keds", "furniture.living_room.sofa", "construction.tools.drill",
    "auto.accessories.player", "kids.toys", "sport.bicycle", "electronics.clocks", "computers.desktop",
    "appliances.personal.massager", "accessories.bag", "electronics.tablet", "appliances.iron",
)


@dataclass(frozen=True)
class WrittenFile:
    name: str
    rows: int
    status: str  # written | exists

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "rows": self.rows, "status": self.status}


def month_name(index: int, start: date = date(2019, 10, 1)) -> tuple[str, date, date]:
    """(file stem, first day, first day of next month) for the index-th month from `start`."""
    y, m = divmod(start.month - 1 + index, 12)
    first = date(start.year + y, m + 1, 1)
    ny, nm = divmod(first.month, 12)
    nxt = date(first.year + ny, nm + 1, 1)
    return f"{first.year}-{_MONTH_NAMES[first.month - 1]}", first, nxt


def _sql_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def events_sql(rows: int, users: int, seed: int, month: int, first: date, nxt: date) -> str:
    """A SELECT producing one month of events in file column order, sorted by time."""
    seconds = int((nxt - first).total_seconds())
    products = max(50, users // 4)
    # r(k, x): a deterministic uniform number in [0, 1) from the seed, the month, a key and x.
    def r(key: str, x: str) -> str:
        return f"((hash({seed}, {month}, '{key}', {x}) % 1000003) / 1000003.0)"

    return f"""
    WITH base AS (
        SELECT i, (i = 0 OR {r('start', 'i')} < 0.17) AS is_start FROM range({rows}) t(i)
    ), numbered AS (
        SELECT i,
               sum(is_start::INT) OVER (ORDER BY i ROWS UNBOUNDED PRECEDING) AS sess,
               i - max(CASE WHEN is_start THEN i END) OVER (ORDER BY i ROWS UNBOUNDED PRECEDING) AS pos
        FROM base
    ), sized AS (
        SELECT *, count(*) OVER (PARTITION BY sess) AS len, max(sess) OVER () AS n_sess FROM numbered
    ), shaped AS (
        SELECT *,
            CAST(floor({users} * pow({r('user', 'sess')}, 1.6)) AS BIGINT) AS u,
            {r('intent', 'sess')} AS intent,
            CAST(floor({products} * pow({r('target', 'sess')}, 2.0)) AS BIGINT) AS target_p,
            CAST(floor({products} * pow({r('product', 'i')}, 2.0)) AS BIGINT) AS view_p,
            -- sessions spread over the month in order; events 5-120 s apart, now and then a pause > 1 h
            CAST(floor((sess - 1) * ({seconds} - 7200) / greatest(n_sess, 1)) AS BIGINT) AS sess_offset,
            CASE WHEN {r('pause', 'i')} < 0.01 THEN 3700 ELSE 5 + CAST(floor({r('gap', 'i')} * 115) AS BIGINT) END AS gap
        FROM sized
    ), typed AS (
        SELECT *,
            CASE
                WHEN intent < 0.12 AND pos = len - 1 AND len > 1 THEN 'purchase'
                WHEN intent < 0.12 AND pos = len - 2 THEN 'cart'
                WHEN intent < 0.20 AND pos = len - 1 THEN 'cart'
                WHEN intent < 0.22 AND pos = len - 1 THEN 'remove_from_cart'
                ELSE 'view'
            END AS event_type,
            sum(gap) OVER (PARTITION BY sess ORDER BY pos ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS elapsed
        FROM shaped
    ), events AS (
        SELECT i,
            TIMESTAMP '{first.isoformat()} 00:00:00' + to_seconds(sess_offset + coalesce(elapsed, 0)) AS ts,
            event_type,
            CASE WHEN event_type = 'view' THEN view_p ELSE target_p END AS p,
            u, sess
        FROM typed
    )
    SELECT
        strftime(ts, '%Y-%m-%d %H:%M:%S') || ' UTC' AS event_time,
        event_type,
        1000978 + p * 7919 AS product_id,
        2053013552226107603 + (p % 97) * 1000003 AS category_id,
        CASE WHEN (p % 97) % 10 < 3 THEN NULL ELSE {_sql_list(_CATEGORIES)}[1 + ((p % 97) % {len(_CATEGORIES)})] END AS category_code,
        CASE WHEN p % 7 = 0 THEN NULL ELSE {_sql_list(_BRANDS)}[1 + (p % {len(_BRANDS)})] END AS brand,
        round(1.0 + (hash({seed}, 'price', p) % 150000) / 100.0, 2) AS price,
        512475445 + u * 37 AS user_id,
        lower(substr(md5('{seed}-{month}-' || sess), 1, 8) || '-' || substr(md5('{seed}-{month}-' || sess), 9, 4) || '-4'
              || substr(md5('{seed}-{month}-' || sess), 14, 3) || '-8' || substr(md5('{seed}-{month}-' || sess), 18, 3)
              || '-' || substr(md5('{seed}-{month}-' || sess), 21, 12)) AS user_session
    FROM events
    ORDER BY ts, i
    """


def generate_files(
    folder: Path,
    months: int = 2,
    rows_per_month: int = 50_000,
    users: int = 5_000,
    seed: int = 46,
    gzip_from: int = 2,
    overwrite: bool = False,
    start: date = date(2019, 10, 1),
) -> list[WrittenFile]:
    """Write one file per month; existing files are kept unless `overwrite`."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[WrittenFile] = []
    con = duckdb.connect()
    try:
        for month in range(months):
            stem, first, nxt = month_name(month, start)
            gz = month + 1 >= gzip_from
            name = f"{stem}.csv.gz" if gz else f"{stem}.csv"
            path = folder / name
            if path.exists() and not overwrite:
                written.append(WrittenFile(name, rows_per_month, "exists"))
                continue
            tmp = folder / f".{name}.tmp"
            sql = events_sql(rows_per_month, users, seed, month, first, nxt)
            options = "HEADER, DELIMITER ','" + (", COMPRESSION gzip" if gz else "")
            con.execute(f"COPY ({sql}) TO '{tmp}' ({options})")
            os.replace(tmp, path)
            written.append(WrittenFile(name, rows_per_month, "written"))
    finally:
        con.close()
    return written
