"""virtuai's proxy against nginx in front of the same notebook, and direct, in one run.

What a dedicated proxy from Debian (#10's option (c)) would give on the data path:
nginx (``nginx-light``, one worker, keep-alive to the upstream, no buffering) adds the
notebook's secret header and passes ``/user/bench/nb/`` to the notebook's port.  It
does **no authentication**: a lower bound for (c), whose authentication would come on
top (``auth_request`` with its answers cached, or njs).  Same method as
``bench/proxy.py`` (paced latencies interleaved request by request, closed-loop
throughput rounds alternating), the three targets in one run.

Usage: ``python bench/proxy_nginx.py [--seconds 2] [--rounds 4]`` (needs ``nginx`` on
the PATH; not a dependency of virtuai).  The last line is
``nginx_added_p99_ms=X nginx_throughput_ratio=R proxy_added_p99_ms=Y proxy_throughput_ratio=S``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, percentile
from proxy import Setup, Target, paced_latencies, throughput

_CONF = """
worker_processes 1; daemon off; master_process off; pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/f; uwsgi_temp_path {dir}/u; scgi_temp_path {dir}/s;
  upstream nb {{ server 127.0.0.1:{upstream}; keepalive 32; }}
  upstream api {{ server 127.0.0.1:{api}; keepalive 8; }}
  proxy_cache_path {dir}/auth keys_zone=auth:1m;
  server {{
    listen 127.0.0.1:{authport};
    location {prefix} {{
      auth_request /_auth;
      proxy_pass http://nb; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Virtuai-Notebook-Secret {secret};
      proxy_set_header X-Virtuai-Auth bearer; proxy_set_header Authorization "";
      proxy_buffering off;
    }}
    location = /_auth {{
      internal;
      proxy_pass http://api/api/v1/whoami; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_cache auth; proxy_cache_key $http_authorization; proxy_cache_valid 200 5s;
    }}
  }}
  server {{
    listen 127.0.0.1:{port};
    location {prefix} {{
      proxy_pass http://nb; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Virtuai-Notebook-Secret {secret};
      proxy_set_header X-Virtuai-Auth bearer; proxy_set_header Authorization "";
      proxy_buffering off;
    }}
  }}
}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    if shutil.which("nginx") is None:
        sys.exit("nginx is not installed (apt-get install nginx-light)")
    setup = Setup("this", {}, "vaig-")
    work = Path(tempfile.mkdtemp(prefix="vai-nginx-"))
    nginx: subprocess.Popen[bytes] | None = None
    try:
        setup.start()
        port, authport = free_port(), free_port()
        conf = _CONF.format(
            api=setup.server.port,
            authport=authport,
            dir=work,
            upstream=setup.direct.port,
            port=port,
            prefix=setup.prefix,
            secret=setup.direct.headers["X-Virtuai-Notebook-Secret"],
        )
        (work / "nginx.conf").write_text(conf)
        nginx = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-e", str(work / "e")])
        time.sleep(1)
        front = Target("nginx", port, setup.prefix, {"Authorization": "Bearer unused"})
        authed = Target("nginx+auth", authport, setup.prefix, setup.proxied.headers)
        targets = [setup.direct, setup.proxied, front, authed]
        paced_latencies(targets, 0.5)
        lat: dict[str, list[float]] = {t.label: [] for t in targets}
        rps: dict[str, list[float]] = {t.label: [] for t in targets}
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for label, samples in paced_latencies(targets, args.seconds).items():
                lat[label] += samples
        for i in range(max(2, args.rounds // 2 + 1)):
            for target in targets if i % 2 == 0 else targets[::-1]:
                rps[target.label].append(throughput(target, args.seconds))
        loads.append(os.getloadavg()[0])
        results: dict[str, tuple[float, float]] = {}
        for target in targets:
            label = target.label
            pairs = [p - d for p, d in zip(lat[label], lat["direct"], strict=True)]
            added = percentile(lat[label], 99) - percentile(lat["direct"], 99)
            ratio = max(rps[label]) / max(rps["direct"])
            median = statistics.median(rps[label]) / statistics.median(rps["direct"])
            results[label] = (added, ratio)
            print(
                f"{label:10} p50={percentile(lat[label], 50):.2f} "
                f"p99={percentile(lat[label], 99):.2f} ms, paired p50 "
                f"{percentile(pairs, 50):.2f} ms; req/s "
                f"{', '.join(f'{r:.0f}' for r in rps[label])}; ratio {ratio:.2f} "
                f"(median {median:.2f})"
            )
        print(f"load average (1 min): {', '.join(f'{x:.2f}' for x in loads)}")
        print(
            f"nginx_added_p99_ms={results['nginx'][0]:.2f} "
            f"nginx_throughput_ratio={results['nginx'][1]:.2f} "
            f"nginx_auth_added_p99_ms={results['nginx+auth'][0]:.2f} "
            f"nginx_auth_throughput_ratio={results['nginx+auth'][1]:.2f} "
            f"proxy_added_p99_ms={results['proxy'][0]:.2f} "
            f"proxy_throughput_ratio={results['proxy'][1]:.2f}"
        )
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait()
        setup.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
