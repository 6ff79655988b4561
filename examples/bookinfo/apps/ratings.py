"""Bookinfo ratings service: GET|POST /ratings/<id>, /health (Istio's ratings.js, v1)."""

from __future__ import annotations

import json
import os
import re
import threading

from common import Handler, serve

_RATINGS_PATH = re.compile(r"^/ratings/[0-9]*")
# POSTed ratings, per product id (in memory, like v1's userAddedRatings).
_added: dict[int, dict[str, object]] = {}
_lock = threading.Lock()


def local_ratings(product_id: int) -> dict[str, object]:
    with _lock:
        if product_id in _added:
            return _added[product_id]
    return {"id": product_id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}


def _product_id(path: str) -> int | None:
    try:
        return int(path.rsplit("/", 1)[-1])
    except ValueError:
        return None


def _db_backed() -> bool:
    # v2 reads MongoDB/MySQL; there is no database here, so it answers like a failed one.
    return os.environ.get("SERVICE_VERSION") == "v2"


class RatingsHandler(Handler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.send_json(200, {"status": "Ratings is healthy"})
            return
        if not _RATINGS_PATH.match(path):
            self.send_json(404, {"error": "not found"})
            return
        product_id = _product_id(path)
        if product_id is None:
            self.send_json(400, {"error": "please provide numeric product ID"})
        elif _db_backed():
            self.send_json(500, {"error": "could not connect to ratings database"})
        else:
            self.send_json(200, local_ratings(product_id))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self.read_body()
        if not _RATINGS_PATH.match(path):
            self.send_json(404, {"error": "not found"})
            return
        product_id = _product_id(path)
        if product_id is None:
            self.send_json(400, {"error": "please provide numeric product ID"})
            return
        try:
            ratings = json.loads(body)
        except ValueError:
            self.send_json(400, {"error": "please provide valid ratings JSON"})
            return
        if _db_backed():
            self.send_json(501, {"error": "Post not implemented for database backed ratings"})
            return
        with _lock:
            _added[product_id] = {"id": product_id, "ratings": ratings}
        self.send_json(200, local_ratings(product_id))


if __name__ == "__main__":
    serve(RatingsHandler)
