#!/usr/bin/env bash
# A real Slurm cluster on this machine, for tests, benchmarks and demos (issue #8).
#
#   scripts/slurm-dev.sh start [--single]   bring it up (idempotent); last line: the
#                                           `virtuai site add ...` command to use it
#   scripts/slurm-dev.sh stop               stop every daemon, remove namespaces/links
#   scripts/slurm-dev.sh status             what runs; exit 0 only when all is up
#   scripts/slurm-dev.sh env                print `export SLURM_CONF=...` for this shell
#
# What it starts (Debian's slurm-wlm 22.05, munge, mariadb, openssh-server; needs root):
#   - munged with its own key and socket;
#   - mariadbd (own datadir, 127.0.0.1:$VSD_DB_PORT) and slurmdbd: sacct works;
#   - slurmctld on the host, reachable at $NET.1 on a private bridge;
#   - N slurmd nodes (default 2), each in its own network namespace *and* UTS namespace
#     (hostname vsd-nI, address $NET.(10+I), `slurmd -N vsd-nI`), 2 GPUs each declared as
#     GRES backed by character devices made with mknod (copies of /dev/null: no
#     hardware, but Slurm binds and counts them and sets CUDA_VISIBLE_DEVICES);
#   - an OpenSSH server as the login node, in its own namespace at $NET.5, accepting the
#     generated key of the unprivileged user `vsdlab` (home /home/vsdlab, shared by every
#     instance: the one thing outside the state dir, with the user itself).
#   --single: one slurmd in the host's namespaces at 127.0.0.1 (no bridge), sshd on
#   127.0.0.1:$VSD_SSH_PORT; faster to start, same commands.
#
# All state lives under $VIRTUAI_SLURM_DEV_DIR (default /tmp/virtuai-slurm-dev); `stop`
# leaves no daemon, namespace or link behind (the user `vsdlab` and its home stay).  A
# --single instance may run beside the default one with its own state dir and ports
# (VSD_DB_PORT, VSD_DBD_PORT, VSD_CTLD_PORT, VSD_SLURMD_PORT, VSD_SSH_PORT); two
# multi-node instances cannot (the namespaces and the bridge have fixed names). Limits are Slurm's cgroup v1 ones
# (task/cgroup, proctrack/cgroup); each node has its own hierarchy (slurm_<node>), so
# several slurmd share one kernel.
set -euo pipefail

DIR=${VIRTUAI_SLURM_DEV_DIR:-/tmp/virtuai-slurm-dev}
NET=${VSD_NET:-10.252.77}          # /24 prefix of the private bridge
BR=${VSD_BRIDGE:-vsdbr0}
NODES=${VSD_NODES:-2}
CLUSTER=vsd
DB_PORT=${VSD_DB_PORT:-13306}
DBD_PORT=${VSD_DBD_PORT:-16819}
CTLD_PORT=${VSD_CTLD_PORT:-16817}
SLURMD_PORT=${VSD_SLURMD_PORT:-16818}
SSH_PORT=${VSD_SSH_PORT:-22}       # on the login namespace's own address (single: 2222)
LAB_USER=vsdlab
LIBDIR=/usr/lib/x86_64-linux-gnu/slurm-wlm

die() { echo "slurm-dev: $*" >&2; exit 1; }
log() { echo "slurm-dev: $*" >&2; }

mode_file() { echo "$DIR/mode"; }
current_mode() { cat "$(mode_file)" 2>/dev/null || echo multi; }

# A killed daemon stays a zombie until its parent reaps it, and a container's init may
# never do so: kill -0 succeeds on a zombie, so its state must be read too.
pid_alive() {  # pid_alive PIDFILE: its daemon (named by the file: sshd.pid, slurmd-X.pid) runs
  [[ -f $1 ]] || return 1
  local pid name comm
  pid=$(cat "$1")
  name=$(basename "$1" .pid); name=${name%%-*}
  kill -0 "$pid" 2>/dev/null && [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]] || return 1
  # The file outlives a daemon killed with SIGKILL, and with pid_max at 32768 a busy machine
  # soon gives its pid to another process: then the daemon is not running (and must not
  # be "stopped" by killing that process).
  comm=$(ps -o comm= -p "$pid" 2>/dev/null)
  [[ $comm == "$name"* ]]
}

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || die "timed out waiting for $what (logs in $DIR/log)"
    sleep 0.2
  done
}

node_names() {
  # A --single node has its own name: its cgroups (slurm_<node>) never meet the cluster's.
  if [[ $(current_mode) == single ]]; then echo vsd-s1; return; fi
  local i; for ((i = 1; i <= NODES; i++)); do echo "vsd-n$i"; done
}

ctl_addr() { [[ $(current_mode) == single ]] && echo 127.0.0.1 || echo "$NET.1"; }

# --- network ----------------------------------------------------------------------
netns_up() {  # netns_up NAME ADDRESS DAEMON-PIDFILE: (re)build; restart the daemon if rebuilt
  local ns=$1 addr=$2 pidfile=$3 veth=vsd${1#vsd-}
  ip netns list | grep -w "$ns" >/dev/null || ip netns add "$ns"
  if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
    # Missing or half-gone (a neighbour deleted a link or the bridge): rebuild the pair, and
    # the daemon inside must start again on the new link.
    ip link del "${veth}h" 2>/dev/null || true
    ip link add "${veth}h" type veth peer name "${veth}c"
    ip link set "${veth}c" netns "$ns"
    ip -n "$ns" link set "${veth}c" name eth0
    kill_pidfile "$pidfile"
  fi
  ip link set "${veth}h" master "$BR" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr show eth0 | grep >/dev/null "$addr/" || ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route show | grep >/dev/null default || ip -n "$ns" route add default via "$NET.1"
}

network_up() {
  ip link show "$BR" >/dev/null 2>&1 || ip link add "$BR" type bridge
  ip addr show "$BR" | grep >/dev/null "$NET.1/" || ip addr add "$NET.1/24" dev "$BR"
  ip link set "$BR" up
  local i
  for ((i = 1; i <= NODES; i++)); do
    netns_up "vsd-n$i" "$NET.$((10 + i))" "$DIR/run/slurmd-vsd-n$i.pid"
  done
  netns_up vsd-login "$NET.5" "$DIR/run/sshd.pid"
}

network_down() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep '^vsd-' || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns"
  done
  ip link show "$BR" >/dev/null 2>&1 && ip link del "$BR"
  true
}

# --- configuration -------------------------------------------------------------------
ensure_user() {
  # The cluster's user, shared by every instance on this machine (a --single benchmark may
  # run beside the default cluster): its home is /home/$LAB_USER, its key per instance
  # (sshd's AuthorizedKeysFile under the state dir).
  id "$LAB_USER" >/dev/null 2>&1 ||
    useradd --system --create-home --home-dir "/home/$LAB_USER" --shell /bin/bash "$LAB_USER"
  [[ $(getent passwd "$LAB_USER" | cut -d: -f6) == "/home/$LAB_USER" ]] ||
    usermod --home "/home/$LAB_USER" "$LAB_USER"
  [[ -d /home/$LAB_USER ]] || install -d -m 755 -o "$LAB_USER" "/home/$LAB_USER"
  # "*": no password, but not locked (sshd without PAM refuses locked accounts).
  usermod -p "*" "$LAB_USER"
}

write_config() {
  local mode; mode=$(current_mode)
  mkdir -p "$DIR"/{etc,log,run,spool,munge,dev,ssh,mysql}
  chmod 755 "$DIR" "$DIR"/{etc,log,run,spool,dev,ssh}
  [[ -f $DIR/munge/munge.key ]] || { dd if=/dev/urandom bs=1024 count=1 of="$DIR/munge/munge.key" status=none; }
  chmod 700 "$DIR/munge"; chmod 400 "$DIR/munge/munge.key"

  local nodes_line gres_line names ctl single_port=""
  ctl=$(ctl_addr)
  names=$(node_names | paste -sd, -)
  : >"$DIR/etc/gres.conf"
  nodes_line=""
  for n in $(node_names); do
    local i=${n#vsd-[ns]} addr
    if [[ $mode == single ]]; then addr=127.0.0.1; else addr="$NET.$((10 + i))"; fi
    nodes_line+="NodeName=$n NodeAddr=$addr NodeHostname=$n CPUs=4 RealMemory=3000 Gres=gpu:2 State=UNKNOWN"$'\n'
    mkdir -p "$DIR/dev/$n" "$DIR/tmp/$n"
    chmod 1777 "$DIR/tmp/$n"
    for g in 0 1; do [[ -e $DIR/dev/$n/gpu$g ]] || mknod -m 666 "$DIR/dev/$n/gpu$g" c 1 3; done
    echo "NodeName=$n Name=gpu File=$DIR/dev/$n/gpu[0-1]" >>"$DIR/etc/gres.conf"
  done
  cat >"$DIR/etc/slurm.conf" <<EOF
# written by scripts/slurm-dev.sh ($mode)
ClusterName=$CLUSTER
SlurmctldHost=vsd-ctl($ctl)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.sock
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
DefMemPerCPU=256
MpiDefault=none
GresTypes=gpu
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$ctl
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$DIR/run/munge.sock
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
JobCompType=jobcomp/none
AccountingStoreFlags=job_comment
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=600
MessageTimeout=10
# Each node's own TmpFS (Slurm expands %n): the nodes share one file system, and
# srun --mpi=pmix makes its per-step directory (spmix_appdir_UID_JOB.STEP) there.
TmpFS=$DIR/tmp/%n
MailProg=/bin/true
$nodes_line
PartitionName=debug Nodes=$names Default=YES MaxTime=60 PriorityTier=1 State=UP
PartitionName=urgent Nodes=$names MaxTime=60 PriorityTier=10 State=UP
EOF
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.sock
DbdHost=localhost
DbdAddr=$ctl
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
  # Memory as a real site constrains it: an overrun is an OOM kill, not swapping.
  printf 'CgroupAutomount=no\nConstrainRAMSpace=yes\nConstrainSwapSpace=yes\nAllowedSwapSpace=0\n' >"$DIR/etc/cgroup.conf"
  # srun --mpi=pmix: PMIx keeps a step's wire-up data in a shared-memory store (gds
  # ds21) by default, whose lock setup now and then crashed a rank in MPI_Init under
  # load (a call through a NULL pointer, seen in CI; openpmix issue 1114 is the same
  # crash).  The plain hash store is the usual cure: the ranks get it from PMIxEnv, the
  # step's PMIx server (slurmstepd) from slurmd's environment (start_slurmd).
  printf 'PMIxEnv=PMIX_MCA_gds=hash\n' >"$DIR/etc/mpi.conf"
  chmod 644 "$DIR/etc/slurm.conf" "$DIR/etc/gres.conf" "$DIR/etc/cgroup.conf" "$DIR/etc/mpi.conf"
}

write_ssh() {
  local addr port
  if [[ $(current_mode) == single ]]; then addr=127.0.0.1; port=${VSD_SSH_PORT:-2222}; else addr="$NET.5"; port=$SSH_PORT; fi
  [[ -f $DIR/ssh/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh/host_ed25519"
  [[ -f $DIR/ssh/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C "virtuai-slurm-dev" -f "$DIR/ssh/id_ed25519"
  chmod 600 "$DIR/ssh/id_ed25519" "$DIR/ssh/host_ed25519"
  install -m 644 "$DIR/ssh/id_ed25519.pub" "$DIR/ssh/authorized_keys"
  # The login node's environment: Slurm's commands find this cluster's config.
  cat >"$DIR/ssh/sshd_config" <<EOF
ListenAddress $addr:$port
HostKey $DIR/ssh/host_ed25519
PidFile $DIR/run/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers $LAB_USER
AuthorizedKeysFile $DIR/ssh/authorized_keys
UsePAM no
StrictModes no
MaxSessions 64
MaxStartups 64:30:128
SetEnv SLURM_CONF=$DIR/etc/slurm.conf
Subsystem sftp internal-sftp
EOF
  echo "$addr $port" >"$DIR/ssh/address"
  # known_hosts line for the login node, as `ssh-keyscan` would print it.
  local hostpat=$addr; [[ $port == 22 ]] || hostpat="[$addr]:$port"
  echo "$hostpat $(cut -d' ' -f1-2 "$DIR/ssh/host_ed25519.pub")" >"$DIR/ssh/known_hosts"
}

# --- daemons ---------------------------------------------------------------------------
in_ns() {  # in_ns NODE CMD... (network + UTS namespace of a node)
  if [[ $(current_mode) == single ]]; then "${@:2}"; return; fi
  # nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup mounts
  # slurmd insists on seeing.
  nsenter --net=/run/netns/"$1" unshare --uts -- sh -c 'hostname "$0"; exec "$@"' "$1" "${@:2}"
}

start_munge() {
  pid_alive "$DIR/run/munged.pid" && return
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/run/munge.sock" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"
  wait_for 10 munged test -S "$DIR/run/munge.sock"
}

start_mariadb() {
  pid_alive "$DIR/run/mariadb.pid" && return
  if [[ ! -d $DIR/mysql/mysql ]]; then
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=normal \
      --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed ($DIR/log/mariadb-install.log)"
  fi
  (setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --socket="$DIR/run/mysql.sock" --pid-file="$DIR/run/mariadb.pid" --log-error="$DIR/log/mariadb.log" \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --skip-name-resolve --innodb-flush-log-at-trx-commit=2 \
    </dev/null >/dev/null 2>&1 &)
  wait_for 60 mariadb mariadb-admin --no-defaults --socket="$DIR/run/mysql.sock" -uroot ping
}

start_slurmdbd() {
  pid_alive "$DIR/run/slurmdbd.pid" && return
  # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF.
  SLURM_CONF=$DIR/etc/slurm.conf slurmdbd
  wait_for 60 slurmdbd bash -c "exec 3<>/dev/tcp/$(ctl_addr)/$DBD_PORT"
}

start_slurmctld() {
  pid_alive "$DIR/run/slurmctld.pid" && return
  mkdir -p "$DIR/spool/ctld"
  # slurmctld runs only where the hostname is SlurmctldHost: its own UTS namespace.
  unshare --uts -- sh -c 'hostname vsd-ctl; exec "$@"' x env SLURM_CONF="$DIR/etc/slurm.conf" slurmctld -f "$DIR/etc/slurm.conf"
  wait_for 180 slurmctld env SLURM_CONF="$DIR/etc/slurm.conf" scontrol ping
}

start_slurmd() {  # start_slurmd NODE
  local n=$1
  pid_alive "$DIR/run/slurmd-$n.pid" && return
  mkdir -p "$DIR/spool/$n"
  in_ns "$n" env SLURM_CONF="$DIR/etc/slurm.conf" PMIX_MCA_gds=hash slurmd -N "$n" -f "$DIR/etc/slurm.conf" ||
    die "slurmd $n did not start: $(tail -3 "$DIR/log/slurmd-$n.log")"
}

start_sshd() {
  pid_alive "$DIR/run/sshd.pid" && return
  mkdir -p /run/sshd
  if [[ $(current_mode) == single ]]; then
    /usr/sbin/sshd -f "$DIR/ssh/sshd_config" -E "$DIR/log/sshd.log"
  else
    nsenter --net=/run/netns/vsd-login unshare --uts -- sh -c 'hostname vsd-login; exec "$@"' x \
      /usr/sbin/sshd -f "$DIR/ssh/sshd_config" -E "$DIR/log/sshd.log"
  fi
  wait_for 10 sshd pid_alive "$DIR/run/sshd.pid"
}

sacctmgr_setup() {
  local mark=$DIR/spool/accounts.done
  [[ -f $mark ]] && return
  local s="env SLURM_CONF=$DIR/etc/slurm.conf sacctmgr -i"
  $s add cluster "$CLUSTER" >/dev/null 2>&1 || true
  $s add account physics,biology,default Cluster="$CLUSTER" Description=virtuai-dev Organization=virtuai >/dev/null
  $s add user "$LAB_USER" Account=default,physics,biology DefaultAccount=default >/dev/null
  $s add user root Account=default,physics,biology DefaultAccount=default >/dev/null
  touch "$mark"
}

nodes_idle() {
  local out; out=$(SLURM_CONF="$DIR/etc/slurm.conf" sinfo -h -N -o '%N %T' 2>/dev/null) || return 1
  local n; for n in $(node_names); do grep -qE "^$n (idle|mixed|allocated)" <<<"$out" || return 1; done
}

# --- commands ----------------------------------------------------------------------
cmd_start() {
  [[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, daemons as root)"
  local want=multi
  [[ ${1:-} == --single ]] && want=single
  for t in slurmctld slurmd slurmdbd munged mariadbd sshd; do
    command -v "$t" >/dev/null || [[ -x /usr/sbin/$t ]] || die "$t missing: run scripts/system-packages.sh"
  done
  mkdir -p "$DIR"
  if [[ -f $(mode_file) && $(current_mode) != "$want" ]]; then
    log "running in $(current_mode) mode: stopping it first"; cmd_stop
  fi
  mkdir -p "$DIR"; echo "$want" >"$(mode_file)"
  ensure_user
  write_config
  write_ssh
  [[ $want == multi ]] && network_up
  start_munge
  start_mariadb
  start_slurmdbd
  # slurmctld registers the cluster in slurmdbd; accounts before jobs are submitted.
  start_slurmctld
  sacctmgr_setup
  local n; for n in $(node_names); do start_slurmd "$n"; done
  start_sshd
  wait_for 180 "nodes to register" nodes_idle
  # Resume nodes that an earlier run left DOWN (killed slurmd, etc.).
  SLURM_CONF=$DIR/etc/slurm.conf scontrol update NodeName="$(node_names | paste -sd, -)" State=RESUME >/dev/null 2>&1 || true
  read -r addr port <"$DIR/ssh/address"
  local login="$LAB_USER@$addr"; [[ $port == 22 ]] || login+=":$port"
  log "up: $(node_names | wc -l) node(s), login $login, SLURM_CONF=$DIR/etc/slurm.conf"
  echo "virtuai site add $CLUSTER --slurm --login $login --identity $DIR/ssh/id_ed25519 --known-hosts $DIR/ssh/known_hosts --partition debug --account-map default=default"
}

kill_pidfile() {
  local f=$1
  if pid_alive "$f"; then
    local p; p=$(cat "$f"); kill "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$f"
}

kill_cluster_procs() {
  local e p
  for e in /proc/[0-9]*/environ; do
    p=${e#/proc/}; p=${p%/environ}
    [[ $p == "$$" ]] && continue
    if { tr "\0" "\n" <"$e"; } 2>/dev/null | grep -xF "SLURM_CONF=$DIR/etc/slurm.conf" >/dev/null; then
      kill -9 "$p" 2>/dev/null || true
    fi
  done
}

cmd_stop() {
  [[ -d $DIR ]] || { log "nothing to stop"; return 0; }
  local f mode; mode=$(current_mode)
  # Cancel what is queued or running, so a later start finds no ghost jobs.
  if pid_alive "$DIR/run/slurmctld.pid"; then
    SLURM_CONF=$DIR/etc/slurm.conf timeout 10 squeue -h -o %A 2>/dev/null |
      xargs -r env SLURM_CONF="$DIR/etc/slurm.conf" timeout 10 scancel 2>/dev/null || true
  fi
  kill_pidfile "$DIR/run/sshd.pid"
  for f in "$DIR"/run/slurmd-*.pid; do [[ -e $f ]] && kill_pidfile "$f"; done
  # Steps still running (slurmstepd and the jobs) carry this cluster's SLURM_CONF in
  # their environment: that finds exactly them, in any namespace.
  kill_cluster_procs
  kill_pidfile "$DIR/run/slurmctld.pid"
  kill_pidfile "$DIR/run/slurmdbd.pid"
  kill_pidfile "$DIR/run/mariadb.pid"
  kill_pidfile "$DIR/run/munged.pid"
  # Namespaces and the bridge are the multi-node cluster's (a --single one has none).
  [[ $mode == multi ]] && network_down
  # Slurm's cgroup v1 hierarchy (slurm_<node>): empty once no step runs.
  for f in $(node_names); do
    find /sys/fs/cgroup/*/"slurm_$f" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -f "$(mode_file)"
  log "stopped"
}

cmd_status() {
  [[ -f $(mode_file) ]] || { echo "stopped"; return 1; }
  local ok=0 f
  for f in munged mariadb slurmdbd slurmctld sshd $(node_names | sed 's/^/slurmd-/'); do
    if pid_alive "$DIR/run/$f.pid"; then echo "$f: running (pid $(cat "$DIR/run/$f.pid"))"; else echo "$f: stopped"; ok=1; fi
  done
  SLURM_CONF=$DIR/etc/slurm.conf sinfo -N -o '%N %P %T %G %m' 2>/dev/null || ok=1
  return $ok
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$DIR/etc/slurm.conf" ;;
  *) echo "usage: $0 start [--single] | stop | status | env" >&2; exit 2 ;;
esac
