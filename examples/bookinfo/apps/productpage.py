"""Bookinfo productpage: the HTML page and the product API (Istio's productpage.py).

Calls details and reviews with Istio's timeouts (3 s each; reviews tried twice, the
"bug" the fault-injection task illustrates), forwards tracing/session headers, and sends
`end-user: <user>` after /login, which Istio's routing-by-end-user task matches on."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from collections import Counter
from html import escape
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from common import TRACING_HEADERS, Handler, get_json, pick_headers, serve, service_base_url

UPSTREAM_TIMEOUT = 3.0
REVIEWS_ATTEMPTS = 2
DETAILS_ERROR = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR = "Sorry, product reviews are currently unavailable for this book."
RATINGS_ERROR = "Sorry, product ratings are currently unavailable for this book."
FORWARD_HEADERS = (*TRACING_HEADERS, "user-agent", "cookie", "authorization", "jwt")
SESSION_COOKIE = "session"
_SECRET = os.environ.get("SESSION_SECRET", "bookinfo-sample-not-a-secret").encode()

PRODUCTS = [{
    "id": 0,
    "title": "The Comedy of Errors",
    "descriptionHtml": '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">'
    "Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> "
    "early plays. It is his shortest and one of his most farcical comedies, with a major "
    "part of the humour coming from slapstick and mistaken identity, in addition to puns "
    "and word play.",
}]

# request_result{destination_app, response_code}, as the original exports on /metrics.
_results: Counter[tuple[str, int]] = Counter()
_results_lock = threading.Lock()


def _count(app: str, status: int) -> None:
    with _results_lock:
        _results[(app, status)] += 1


# --- session: a signed cookie holding the user name (Flask's session in the original) ---

def _sign(payload: str) -> str:
    return hmac.new(_SECRET, payload.encode(), hashlib.sha256).hexdigest()[:32]


def session_cookie_value(user: str) -> str:
    payload = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
    return f"{payload}.{_sign(payload)}"


def session_user(cookie_header: str | None) -> str:
    if not cookie_header:
        return ""
    try:
        morsel = SimpleCookie(cookie_header).get(SESSION_COOKIE)
    except CookieError:
        return ""
    if morsel is None or "." not in morsel.value:
        return ""
    payload, sig = morsel.value.rsplit(".", 1)
    if not hmac.compare_digest(sig, _sign(payload)):
        return ""
    try:
        return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


# --- upstream calls ---

def product_details(product_id: str, headers: dict[str, str]) -> tuple[int, Any]:
    url = f"{service_base_url('details')}/details/{product_id}"
    status, body = get_json(url, headers, UPSTREAM_TIMEOUT)
    _count("details", status)
    if status == 200 and body is not None:
        return 200, body
    return status, {"error": DETAILS_ERROR}


def product_reviews(product_id: str, headers: dict[str, str]) -> tuple[int, Any]:
    url = f"{service_base_url('reviews')}/reviews/{product_id}"
    status = 500
    for _ in range(REVIEWS_ATTEMPTS):
        status, body = get_json(url, headers, UPSTREAM_TIMEOUT)
        if status == 200 and body is not None:
            _count("reviews", 200)
            return 200, body
    _count("reviews", status)
    return status, {"error": REVIEWS_ERROR}


def product_ratings(product_id: str, headers: dict[str, str]) -> tuple[int, Any]:
    url = f"{service_base_url('ratings')}/ratings/{product_id}"
    status, body = get_json(url, headers, UPSTREAM_TIMEOUT)
    _count("ratings", status)
    if status == 200 and body is not None:
        return 200, body
    return status, {"error": RATINGS_ERROR}


# --- HTML ---

def _stars(rating: dict[str, Any]) -> str:
    stars = rating.get("stars")
    if isinstance(stars, int) and stars > 0:
        color = escape(str(rating.get("color", "black")))
        full = '<span class="glyphicon glyphicon-star"></span>\n' * min(stars, 5)
        empty = '<span class="glyphicon glyphicon-star-empty"></span>\n' * max(0, 5 - stars)
        return f'<font color="{color}" class="stars text-{color}-500">\n{full}{empty}</font>\n'
    if rating.get("error"):
        return f'<p class="rating-error"><i>{escape(str(rating["error"]))}</i></p>\n'
    return ""


def _details_html(status: int, details: dict[str, Any]) -> str:
    if status != 200:
        return ('<h4 class="text-center text-primary">Error fetching product details!</h4>\n'
                f'<p>{escape(str(details.get("error", "")))}</p>\n')
    rows = "".join(
        f"<dt>{label}:</dt><dd>{escape(str(details.get(key, '')))}</dd>\n"
        for label, key in (("Type", "type"), ("Pages", "pages"), ("Publisher", "publisher"),
                           ("Language", "language"), ("ISBN-10", "ISBN-10"),
                           ("ISBN-13", "ISBN-13")))
    return f'<h4 class="text-center text-primary">Book Details</h4>\n<dl>\n{rows}</dl>\n'


def _reviews_html(status: int, reviews: dict[str, Any]) -> str:
    if status != 200:
        return ('<h4 class="text-center text-primary">Error fetching product reviews!</h4>\n'
                f'<p>{escape(str(reviews.get("error", "")))}</p>\n')
    served_by = escape(str(reviews.get("podname", "")))
    cluster = reviews.get("clustername")
    if cluster and cluster != "null":
        served_by += f" on cluster {escape(str(cluster))}"
    parts = ['<h4 class="text-center text-primary">Book Reviews</h4>\n']
    for review in reviews.get("reviews", []):
        rating = review.get("rating")
        parts.append(
            '<blockquote class="review">\n'
            f'<p>{escape(str(review.get("text", "")))}</p>\n'
            f'<small>{escape(str(review.get("reviewer", "")))}</small>\n'
            f'{_stars(rating) if isinstance(rating, dict) else ""}'
            "</blockquote>\n")
    parts.append(f'<dl><dt>Reviews served by:</dt><dd><u>{served_by}</u></dd></dl>\n')
    return "".join(parts)


def product_page_html(user: str, details: tuple[int, Any], reviews: tuple[int, Any]) -> str:
    product = PRODUCTS[0]
    if user:
        nav = (f'<span class="navbar-text">{escape(user)}</span> '
               '<a href="logout" class="btn btn-default navbar-btn">sign out</a>')
    else:
        nav = ('<form method="post" action="login" name="login_form">'
               '<input type="text" name="username" placeholder="Username">'
               '<input type="password" name="passwd" placeholder="Password">'
               '<button type="submit" id="sign-in-button">Sign in</button></form>')
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
        "<title>Simple Bookstore App</title>\n</head>\n<body>\n"
        f'<nav class="navbar navbar-inverse"><a class="navbar-brand" href="#">BookInfo Sample</a>'
        f"\n{nav}\n</nav>\n"
        '<div class="container-fluid">\n'
        f'<h3 class="text-center text-primary">{escape(product["title"])}</h3>\n'
        f'<p id="summary">{product["descriptionHtml"]}</p>\n'
        f'<div class="details col-md-6">\n{_details_html(*details)}</div>\n'
        f'<div class="reviews col-md-6">\n{_reviews_html(*reviews)}</div>\n'
        "</div>\n</body>\n</html>\n")


def index_html() -> str:
    base = {n: service_base_url(n) for n in ("details", "reviews", "ratings")}
    rows = "".join(
        f"<tr><td>{name}</td><td>{escape(url)}</td><td>{endpoint}</td><td>{children}</td></tr>\n"
        for name, url, endpoint, children in (
            ("productpage", base["details"], "details", "details, reviews"),
            ("details", base["details"], "details", ""),
            ("reviews", base["reviews"], "reviews", "ratings"),
            ("ratings", base["ratings"], "ratings", "")))
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
        "<title>Simple Bookstore App</title>\n</head>\n<body>\n"
        "<h3>Hello! This is a simple bookstore application consisting of three services "
        "as shown below</h3>\n"
        '<table class="table table-condensed table-bordered table-hover">\n'
        "<tr><th>name</th><th>endpoint</th><th>path</th><th>children</th></tr>\n"
        f"{rows}</table>\n"
        "<p>Click on one of the links below to auto generate a request to the backend as "
        "a real user or a tester</p>\n"
        '<p><a href="/productpage?u=normal">Normal user</a></p>\n'
        '<p><a href="/productpage?u=test">Test user</a></p>\n'
        "</body>\n</html>\n")


def metrics_text() -> str:
    lines = ["# HELP request_result_total Results of requests",
             "# TYPE request_result_total counter"]
    with _results_lock:
        items = sorted(_results.items())
    lines += [f'request_result_total{{destination_app="{app}",response_code="{code}"}} {n}.0'
              for (app, code), n in items]
    return "\n".join(lines) + "\n"


class ProductPageHandler(Handler):
    def _forward_headers(self) -> dict[str, str]:
        headers = pick_headers(self.headers, FORWARD_HEADERS)
        user = session_user(self.headers.get("Cookie"))
        if user:
            headers["end-user"] = user
        return headers

    def _api(self, status_body: tuple[int, Any]) -> None:
        self.send_json(*status_body)

    def _redirect_back(self, cookie: str) -> None:
        # Istio redirects to the referrer (the product page the form was on).
        target = self.headers.get("Referer") or "/productpage"
        self.send_body(302, b"", "text/html; charset=utf-8",
                       [("Location", target), ("Set-Cookie", cookie)])

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        if path in ("/", "/index.html"):
            self.send_body(200, index_html().encode(), "text/html; charset=utf-8")
        elif path == "/health":
            self.send_body(200, b"Product page is healthy", "text/html; charset=utf-8")
        elif path == "/productpage":
            headers = self._forward_headers()
            product_id = str(PRODUCTS[0]["id"])
            details = product_details(product_id, headers)
            reviews = product_reviews(product_id, headers)
            user = session_user(self.headers.get("Cookie"))
            page = product_page_html(user, details, reviews)
            self.send_body(200, page.encode(), "text/html; charset=utf-8")
        elif path == "/logout":
            self._redirect_back(f"{SESSION_COOKIE}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
                                "Max-Age=0; Path=/")
        elif path == "/metrics":
            self.send_body(200, metrics_text().encode(), "text/plain; version=0.0.4")
        elif parts[:3] == ["api", "v1", "products"] and len(parts) == 3:
            self.send_json(200, PRODUCTS)
        elif parts[:3] == ["api", "v1", "products"] and len(parts) == 4:
            self._api(product_details(parts[3], self._forward_headers()))
        elif parts[:3] == ["api", "v1", "products"] and len(parts) == 5 and parts[4] == "reviews":
            self._api(product_reviews(parts[3], self._forward_headers()))
        elif parts[:3] == ["api", "v1", "products"] and len(parts) == 5 and parts[4] == "ratings":
            self._api(product_ratings(parts[3], self._forward_headers()))
        else:
            self.send_body(404, b"Not Found", "text/html; charset=utf-8")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self.read_body()
        if path != "/login":
            self.send_body(405 if path in ("/productpage", "/logout") else 404, b"",
                           "text/html; charset=utf-8")
            return
        form = parse_qs(body.decode("utf-8", "replace"))
        query = parse_qs(self.path.split("?", 1)[1]) if "?" in self.path else {}
        user = (form.get("username") or query.get("username") or [""])[0]
        if not user:
            self.send_body(400, b"username is required", "text/plain; charset=utf-8")
            return
        self._redirect_back(f"{SESSION_COOKIE}={session_cookie_value(user)}; HttpOnly; Path=/")


if __name__ == "__main__":
    serve(ProductPageHandler)
