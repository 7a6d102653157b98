"""A scikit-learn model behind FastAPI, served as a virtuai service replica.

At start it trains a logistic regression on the Iris data set that ships with
scikit-learn (no download), then answers readiness on ``GET /healthz`` and
predictions on ``POST /predict``::

    {"features": [[5.1, 3.5, 1.4, 0.2], [6.3, 2.9, 5.6, 1.8]]}
    -> {"classes": ["setosa", "virginica"], "probabilities": [[...], [...]], ...}

It listens on ``$HOST:$PORT``, which the platform gives every replica.
``MODEL_VERSION`` (an environment variable of the service) is echoed in each
answer, so a rolling update can be watched from the client side.
"""

from __future__ import annotations

import logging
import os

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

iris = load_iris()
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
model.fit(iris.data, iris.target)
VERSION = os.environ.get("MODEL_VERSION", "1")

app = FastAPI(title="iris")


class Flowers(BaseModel):
    # sepal length, sepal width, petal length, petal width (cm), one row per flower
    features: list[list[float]] = Field(min_length=1, max_length=1000)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ready", "version": VERSION}


@app.post("/predict")
def predict(flowers: Flowers) -> dict[str, object]:
    rows = [row for row in flowers.features if len(row) == 4]
    if len(rows) != len(flowers.features):
        raise HTTPException(status_code=422, detail="each row needs 4 features")
    labels = model.predict(rows)
    return {
        "classes": [str(iris.target_names[i]) for i in labels],
        "probabilities": model.predict_proba(rows).round(4).tolist(),
        "version": VERSION,
        "replica": os.environ.get("VIRTUAI_JOB_ID", ""),
    }


class _NoProbes(logging.Filter):
    """The platform probes /healthz every second: keep those lines out of the replica's log
    (`virtuai service logs`), which then shows the requests that matter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "/healthz" not in record.getMessage()


logging.getLogger("uvicorn.access").addFilter(_NoProbes())

if __name__ == "__main__":
    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ["PORT"]))
