#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, with accounting (slurmdbd + MariaDB),
# for trying and testing `squeezejax sweep --executor=slurm` without a cluster.
#
#   sudo bash scripts/slurm_local.sh start    # installs what is missing, starts, waits
#   eval "$(bash scripts/slurm_local.sh env)" # SLURM_CONF for sbatch/sacct/squeezejax
#   bash scripts/slurm_local.sh status
#   sudo bash scripts/slurm_local.sh stop     # stops only the daemons this script started
#
# Everything (configs, MariaDB data, state, logs, sockets, pid files) lives under
# $SQUEEZEJAX_SLURM_DIR (default /tmp/squeezejax-slurm); the ports below are not
# SLURM's or MariaDB's defaults, so a system SLURM or database is left alone.
# No cgroups: proctrack/linuxproc and task/none. Start order: munged, MariaDB,
# slurmdbd, the cluster in the accounting database, slurmctld, slurmd.
set -euo pipefail

DIR="${SQUEEZEJAX_SLURM_DIR:-/tmp/squeezejax-slurm}"
CLUSTER=squeezejax
NODE=localhost  # the node's name: resolvable everywhere (jax.distributed's coordinator)
CTLD_PORT=16817 SLURMD_PORT=16818 DBD_PORT=16819 DB_PORT=16306
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
export SLURM_CONF="$DIR/etc/slurm.conf"

usage() { echo "usage: $0 start|stop|status|env" >&2; exit 2; }
log() { echo "[slurm_local] $*" >&2; }
die() { log "error: $*"; exit 1; }

pidfile() { echo "$DIR/run/$1.pid"; }

# A daemon counts as ours only if its pid file names a live process of that name whose
# command line or environment (SLURM_CONF) names $DIR: never another process with the pid.
running() {
  local pid; pid=$(cat "$(pidfile "$1")" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] &&
    cat "/proc/$pid/cmdline" "/proc/$pid/environ" 2>/dev/null | tr '\0' ' ' | grep -q -- "$DIR"
}

# Waits up to $2 seconds for the command "$3..." to succeed; names $1 on failure.
wait_for() {
  local what=$1 seconds=$2; shift 2
  for _ in $(seq "$((seconds * 2))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$what did not come up in ${seconds}s; its log is under $DIR/log"
}

# (The packages' own system services, where the system starts them, are not ours:
# they keep their default configs and ports, and this script never touches them.)
install_packages() {
  local tool
  for tool in sbatch slurmctld slurmd slurmdbd munged mariadbd; do
    command -v "$tool" >/dev/null || break
  done
  command -v "$tool" >/dev/null && return 0
  log "installing ${PACKAGES[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${PACKAGES[@]}" >/dev/null
}

write_configs() {
  mkdir -p "$DIR"/{etc,run,log,state,spool,munge,mysql}
  chmod 755 "$DIR/munge"  # clients (any user) need its socket; the key stays 600
  [ -s "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key"
  chmod 600 "$DIR/munge/munge.key"
  # The node as slurmd sees it (CPUs, sockets, cores, memory), so it is not drained.
  local hardware; hardware=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //')
  local auth="AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket.2"
  cat >"$SLURM_CONF" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
$auth
CredType=cred/munge
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# For slurmdbd connections the munge socket is given here, not in AuthInfo.
AccountingStoragePass=$DIR/munge/munge.socket.2
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
# Written by scripts/slurm_local.sh.
$auth
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$(pidfile slurmdbd)
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"  # slurmdbd refuses a readable one (the password)
}

sql() { mariadb --no-defaults --socket="$DIR/mysql/socket" -u root -e "$1"; }

start_munged() {
  running munged && return 0
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket.2" \
    --pid-file="$(pidfile munged)" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed" 9>&-
  wait_for munged 10 running munged
}

start_mariadbd() {
  running mariadbd && return 0
  if [ ! -d "$DIR/mysql/data/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$DIR/mysql/data" --user=root \
      --auth-root-authentication-method=socket --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1
  fi
  # --no-defaults: nothing from /etc/mysql; TCP on 127.0.0.1 only, for slurmdbd.
  setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql/data" \
    --socket="$DIR/mysql/socket" --port=$DB_PORT --bind-address=127.0.0.1 \
    --pid-file="$(pidfile mariadbd)" --log-error="$DIR/log/mariadb.log" \
    --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 9>&- &
  wait_for MariaDB 60 sql 'SELECT 1'
  wait_for "MariaDB's pid file" 10 running mariadbd
  sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
       GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
  running slurmdbd && return 0
  slurmdbd 9>&-
  wait_for slurmdbd 60 sacctmgr -n list cluster
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
}

start_slurmctld() {
  running slurmctld && return 0
  slurmctld -R 9>&-  # -R: recover jobs from $DIR/state after a restart
  wait_for slurmctld 60 scontrol ping
}

start_slurmd() {
  running slurmd && return 0
  slurmd -N "$NODE" 9>&-
  wait_for "slurmd (node $NODE idle in sinfo)" 90 node_idle
}

node_idle() {
  scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true  # a drained leftover
  [[ "$(sinfo -h -n "$NODE" -o %t)" =~ ^(idle|mix|alloc) ]]
}

start() {
  [ "$(id -u)" = 0 ] || die "start needs root (slurmd runs jobs as their users): sudo bash $0 start"
  install_packages
  mkdir -p "$DIR"
  exec 9>"$DIR/.script.lock"
  flock 9  # two starts at once take turns (the daemons are started without fd 9)
  write_configs
  start_munged
  start_mariadbd
  start_slurmdbd
  start_slurmctld
  start_slurmd
  wait_for "sacct (accounting)" 60 sacct -n -X -S now
  log "cluster $CLUSTER is up: $(sinfo -h -o '%P %D node(s) %c CPUs %t'); logs in $DIR/log"
  echo "export SLURM_CONF=$SLURM_CONF"
}

stop() {
  [ -d "$DIR/run" ] || { log "nothing started under $DIR"; return 0; }
  local i pid jobs=()
  if running slurmctld; then  # this cluster's jobs first, so that no job step outlives it
    mapfile -t jobs < <(squeue --noheader --format=%A 2>/dev/null)
    if [ ${#jobs[@]} -gt 0 ]; then
      log "cancelling jobs ${jobs[*]}"
      scancel "${jobs[@]}" || true
      for _ in $(seq 80); do [ -z "$(squeue --noheader 2>/dev/null)" ] && break; sleep 0.5; done
    fi
  fi
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do  # the start order, reversed
    local name=${DAEMONS[$i]}
    running "$name" || continue
    pid=$(cat "$(pidfile "$name")")
    kill "$pid"
    for _ in $(seq 60); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
    if [ -d "/proc/$pid" ]; then log "$name (pid $pid) did not stop; killing it"; kill -9 "$pid"; fi
    log "stopped $name (pid $pid)"
  done
}

status() {
  local code=0
  for name in "${DAEMONS[@]}"; do
    if running "$name"; then echo "$name: running (pid $(cat "$(pidfile "$name")"))"
    else echo "$name: stopped"; code=1; fi
  done
  if [ $code = 0 ]; then sinfo; fi
  return $code
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  *) usage ;;
esac
