"""The graph's SQLite schema (graph.db, WAL) and transaction helper."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- One row per image; id = the config digest.
CREATE TABLE IF NOT EXISTS images (
    id            TEXT PRIMARY KEY,
    parent        TEXT NOT NULL DEFAULT '',
    created       REAL NOT NULL,          -- config "created", unix seconds
    size          INTEGER NOT NULL,       -- content bytes of all its layers
    labels        TEXT NOT NULL DEFAULT '{}',
    top_chain     TEXT,                   -- NULL for an image without layers
    added         REAL NOT NULL,
    last_used     REAL,
    last_tag_time REAL
);
CREATE TABLE IF NOT EXISTS image_layers (
    image_id TEXT NOT NULL,
    idx      INTEGER NOT NULL,            -- 0 = bottom layer
    chain_id TEXT NOT NULL,
    PRIMARY KEY (image_id, idx)
);
CREATE INDEX IF NOT EXISTS image_layers_chain ON image_layers (chain_id);
-- References: one name → one image. kind 'tag' (repo:tag) or 'digest' (repo@digest).
CREATE TABLE IF NOT EXISTS refs (
    name     TEXT PRIMARY KEY,            -- fully qualified, as str(Reference)
    repo     TEXT NOT NULL,               -- "docker.io/library/busybox"
    kind     TEXT NOT NULL,
    image_id TEXT NOT NULL,
    created  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS refs_image ON refs (image_id);
-- Manifests and indexes an image was pulled through.
CREATE TABLE IF NOT EXISTS manifests (
    digest     TEXT NOT NULL,
    image_id   TEXT NOT NULL,
    media_type TEXT,
    kind       TEXT NOT NULL,             -- 'manifest' | 'index'
    PRIMARY KEY (digest, image_id)
);
-- Unpacked layers, once per chain id. refcount = images + containers using it.
CREATE TABLE IF NOT EXISTS layers (
    chain_id    TEXT PRIMARY KEY,
    diff_id     TEXT NOT NULL,
    parent      TEXT,                     -- parent chain id
    size        INTEGER NOT NULL,
    tar_size    INTEGER,
    blob_digest TEXT,                     -- the (compressed) blob it was unpacked from
    media_type  TEXT,
    refcount    INTEGER NOT NULL DEFAULT 0,
    created     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS layers_diff ON layers (diff_id);
-- Blobs known to hold a diff id (compressed or not): what save and push send.
CREATE TABLE IF NOT EXISTS layer_blobs (
    diff_id    TEXT NOT NULL,
    digest     TEXT NOT NULL,
    media_type TEXT,
    size       INTEGER,
    PRIMARY KEY (diff_id, digest)
);
CREATE TABLE IF NOT EXISTS leases (
    name      TEXT PRIMARY KEY,
    created   REAL NOT NULL,
    temporary INTEGER NOT NULL DEFAULT 1  -- dropped at open: its holder died
);
CREATE TABLE IF NOT EXISTS lease_resources (
    lease    TEXT NOT NULL,
    resource TEXT NOT NULL,               -- blob digest, chain id or "ingest:<ref>"
    PRIMARY KEY (lease, resource)
);
CREATE TABLE IF NOT EXISTS containers (
    id       TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    dir      TEXT NOT NULL,
    created  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS container_layers (
    container_id TEXT NOT NULL,
    chain_id     TEXT NOT NULL,
    PRIMARY KEY (container_id, chain_id)
);
"""


class Database:
    """One SQLite connection behind a lock; `tx()` is a write transaction (BEGIN IMMEDIATE)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(str(self.path), isolation_level=None,
                                    check_same_thread=False, timeout=60)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self._depth = 0
        self.conn.executescript(SCHEMA)
        with self.tx() as c:
            c.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                      (str(SCHEMA_VERSION),))

    @contextlib.contextmanager
    def tx(self):
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield _Cursor(self.conn)
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield _Cursor(self.conn)
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self.conn.execute("COMMIT")

    def query(self, sql: str, args=()) -> list:
        with self.lock:
            return self.conn.execute(sql, args).fetchall()

    def one(self, sql: str, args=()):
        with self.lock:
            return self.conn.execute(sql, args).fetchone()

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class _Cursor:
    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str, args=()):
        return self.conn.execute(sql, args)

    def executemany(self, sql: str, rows):
        return self.conn.executemany(sql, rows)

    def query(self, sql: str, args=()) -> list:
        return self.conn.execute(sql, args).fetchall()

    def one(self, sql: str, args=()):
        return self.conn.execute(sql, args).fetchone()
