"""Bookinfo reviews service: GET /reviews/<id>, /health (Istio's LibertyRestEndpoint.java).

The three versions are one program configured like Istio's images: v1 ENABLE_RATINGS unset
(no stars), v2 ENABLE_RATINGS=true STAR_COLOR=black, v3 ENABLE_RATINGS=true STAR_COLOR=red."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import Any

from common import TRACING_HEADERS, Handler, get_json, pick_headers, serve, service_base_url

# Java's Boolean.valueOf: true only for "true", any case.
RATINGS_ENABLED = os.environ.get("ENABLE_RATINGS", "").lower() == "true"
STAR_COLOR = os.environ.get("STAR_COLOR") or "black"
# Istio's timeouts the fault-injection task relies on: v2 (black) waits 10 s for ratings,
# v3 only 2.5 s.
RATINGS_TIMEOUT = 10.0 if STAR_COLOR == "black" else 2.5
PODNAME = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()
# Java concatenates a null CLUSTER_NAME into the JSON as the string "null".
CLUSTERNAME = os.environ.get("CLUSTER_NAME") or "null"

FORWARD_HEADERS = (*TRACING_HEADERS, "end-user", "user-agent", "cookie", "authorization", "jwt")
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"

REVIEWS = (
    ("Reviewer1",
     "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    ("Reviewer2",
     "Absolutely fun and entertaining. The play lacks thematic depth when compared to "
     "other plays by Shakespeare."),
)

_PATH = re.compile(r"^/reviews/(-?[0-9]+)/?$")


def fetch_ratings(product_id: int, incoming: Mapping[str, str] | Any) -> dict[str, int]:
    """Reviewer → stars from the ratings service; {} when it fails (any non-200)."""
    url = f"{service_base_url('ratings')}/ratings/{product_id}"
    headers = pick_headers(incoming, FORWARD_HEADERS)
    headers["Accept"] = "application/json"
    status, body = get_json(url, headers, RATINGS_TIMEOUT)
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("ratings"), dict):
        return {}
    return {k: v for k, v in body["ratings"].items() if isinstance(v, int)}


def reviews_body(product_id: int, stars: Mapping[str, int]) -> dict[str, Any]:
    reviews = []
    for reviewer, text in REVIEWS:
        review: dict[str, Any] = {"reviewer": reviewer, "text": text}
        if RATINGS_ENABLED:
            if reviewer in stars:
                review["rating"] = {"stars": stars[reviewer], "color": STAR_COLOR}
            else:
                review["rating"] = {"error": RATINGS_UNAVAILABLE}
        reviews.append(review)
    return {"id": str(product_id), "podname": PODNAME, "clustername": CLUSTERNAME,
            "reviews": reviews}


class ReviewsHandler(Handler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.send_json(200, {"status": "Reviews is healthy"})
            return
        match = _PATH.match(path)
        if match is None:
            self.send_json(404, {"error": "not found"})
            return
        product_id = int(match.group(1))
        stars = fetch_ratings(product_id, self.headers) if RATINGS_ENABLED else {}
        self.send_json(200, reviews_body(product_id, stars))


if __name__ == "__main__":
    serve(ReviewsHandler)
