#!/usr/bin/env bash
# Debian packages the full test suite uses: a real PostgreSQL server (started by the
# tests themselves); iproute2, bubblewrap and nftables for virtual clusters; Slurm; chromium
# for the web dashboard's browser tests (driven by Playwright, which downloads no browser).
# Needs root.
set -euo pipefail
packages=(postgresql iproute2 bubblewrap procps nftables util-linux chromium)
# nginx for the proxy engine `proxy.engine: nginx` (tests/e2e/test_e2e_nginx.py, bench/proxy.py).
packages+=(nginx-light)
# nginx's Lua module (and its development kit, LuaJIT, lua-resty-core): the engine's one
# keep-alive pool for every workload (balancer_by_lua: no reload as workloads come and go)
# and its filter of the platform's session cookie out of workloads' Set-Cookie.
packages+=(libnginx-mod-http-lua)
# A real Slurm cluster for the Slurm-site tests and benchmarks (scripts/slurm-dev.sh):
# slurmctld/slurmd/slurmdbd, munge, MariaDB for accounting (sacct), an SSH login node;
# rsync stages datasets to a site.
packages+=(slurm-wlm slurmdbd munge mariadb-server openssh-server openssh-client rsync)
# Open MPI 4.1 (with PMIx 4.2, libpmix2) for `srun --mpi=pmix` steps: mpirun/orted wire the
# ranks of virtuai's own srun, and Slurm's mpi_pmix plugin dlopens pmix2/lib/libpmix.so
# (from libpmix-dev, which libopenmpi-dev brings) on the dev cluster; mpicc
# (libopenmpi-dev) builds the tests' MPI program.  About 24 MB of .debs
# (97 MB installed, most of it the compiler wrappers' gfortran and headers), ~30 s.
packages+=(openmpi-bin libopenmpi-dev)
# systemd-analyze, which checks deploy/systemd/virtuai.service (tests/e2e/test_e2e_systemd.py);
packages+=(systemd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
