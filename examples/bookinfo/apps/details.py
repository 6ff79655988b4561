"""Bookinfo details service: GET /details/<id>, /health (Istio's details.rb)."""

from __future__ import annotations

from common import Handler, serve


def book_details(product_id: int) -> dict[str, object]:
    # The external Google Books lookup (ENABLE_EXTERNAL_BOOK_SERVICE) is left out: pods
    # here have no route off the host.
    return {
        "id": product_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


class DetailsHandler(Handler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.send_json(200, {"status": "Details is healthy"})
        elif path == "/details" or path.startswith("/details/"):
            last = path.rstrip("/").rsplit("/", 1)[-1]
            try:
                product_id = int(last)
            except ValueError:
                self.send_json(400, {"error": "please provide numeric product id"})
                return
            self.send_json(200, book_details(product_id))
        else:
            self.send_json(404, {"error": "not found"})


if __name__ == "__main__":
    serve(DetailsHandler)
