"""A small model served over HTTP: a nearest-centroid classifier of Iris flowers.

Standard library only, so that any Python 3 runs it as a virtuai service replica.
It listens on ``$HOST:$PORT`` (given by the platform), answers readiness on
``GET /healthz`` once the model is loaded, and predicts on ``POST /predict``::

    {"features": [5.1, 3.5, 1.4, 0.2]}  ->  {"class": "setosa", ...}

``MODEL_VERSION`` (an environment variable of the service) is echoed in each
answer, so a rolling update can be watched from the client side.
``MODEL_LOAD_S`` delays readiness, as loading real weights would.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Per-class means of the Iris data set (sepal length, sepal width, petal length, petal
# width), in cm: the "weights" of this model.
CENTROIDS = {
    "setosa": (5.006, 3.428, 1.462, 0.246),
    "versicolor": (5.936, 2.770, 4.260, 1.326),
    "virginica": (6.588, 2.974, 5.552, 2.026),
}
VERSION = os.environ.get("MODEL_VERSION", "1")
REPLICA = os.environ.get("VIRTUAI_JOB_ID", "?")
STATE = {"loaded": False, "healthy": True}


def predict(features: list[float]) -> tuple[str, dict[str, float]]:
    distances = {name: math.dist(features, centre) for name, centre in CENTROIDS.items()}
    return min(distances, key=lambda name: distances[name]), distances


class Handler(BaseHTTPRequestHandler):
    # Buffered: an answer's headers and body leave in one write when the request is done,
    # not the headers first.  A replica killed between two writes would leave its client
    # (through any proxy) with headers and no body, which no proxy can retry.
    wbufsize = -1

    def do_GET(self) -> None:
        if self.path == "/healthz":
            ok = STATE["loaded"] and STATE["healthy"]
            self._answer(200 if ok else 503, {"ready": ok})
        elif self.path == "/":
            self._answer(200, {"model": "iris-centroids", "version": VERSION, "replica": REPLICA})
        else:
            self._answer(404, {"error": f"no {self.path}"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path == "/sick":  # for demonstrations: readiness fails from now on
            STATE["healthy"] = False
            self._answer(200, {"healthy": False, "replica": REPLICA})
            return
        if self.path != "/predict":
            self._answer(404, {"error": f"no {self.path}"})
            return
        try:
            features = [float(x) for x in json.loads(body)["features"]]
            if len(features) != 4:
                raise ValueError("four features")
        except (ValueError, KeyError, TypeError) as error:
            self._answer(422, {"error": f"expected {{'features': [4 numbers]}}: {error}"})
            return
        label, distances = predict(features)
        self._answer(
            200, {"class": label, "distances": distances, "version": VERSION, "replica": REPLICA}
        )

    def _answer(self, status: int, data: object) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would fill the replica's log


def main() -> None:
    server = ThreadingHTTPServer(
        (os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler
    )
    server.daemon_threads = True

    def load() -> None:
        time.sleep(float(os.environ.get("MODEL_LOAD_S", "0")))
        STATE["loaded"] = True
        print(f"model {VERSION} loaded; replica {REPLICA} ready on port {os.environ['PORT']}")
        sys.stdout.flush()

    threading.Thread(target=load, daemon=True).start()
    # SIGTERM (the platform stopping a drained replica): finish what is in flight, then go.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
