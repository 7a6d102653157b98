"""Ask the iris service through virtuai's proxy: python3 client.py [SEPAL_L SEPAL_W PETAL_L PETAL_W]

Standard library only, so it reads no config file: give the server, your token and
your tenant in the environment:

    VIRTUAI_URL=http://127.0.0.1:8642 VIRTUAI_TOKEN=vai_... VIRTUAI_TENANT=physics python3 client.py
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

url = os.environ.get("VIRTUAI_URL", "http://127.0.0.1:8642").rstrip("/")
missing = [v for v in ("VIRTUAI_TOKEN", "VIRTUAI_TENANT") if not os.environ.get(v)]
if missing:
    sys.exit(f"set {' and '.join(missing)} (your API token, the service's tenant)")
tenant = os.environ["VIRTUAI_TENANT"]
features = [float(x) for x in sys.argv[1:5]] or [6.3, 2.9, 5.6, 1.8]
request = urllib.request.Request(
    f"{url}/svc/{tenant}/iris/predict",
    data=json.dumps({"features": features}).encode(),
    headers={
        "Content-Type": "application/json",
        "Authorization": f"Bearer {os.environ['VIRTUAI_TOKEN']}",
    },
    method="POST",
)
# A service scaled to zero starts a replica: the request is held until it is ready.
try:
    with urllib.request.urlopen(request, timeout=180) as response:
        print(json.dumps(json.loads(response.read()), indent=2))
except urllib.error.HTTPError as error:  # the platform's answer says why (JSON)
    sys.exit(f"{error.code} {error.reason}: {error.read().decode(errors='replace')}")
