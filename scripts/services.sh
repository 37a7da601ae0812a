#!/usr/bin/env bash
# Start PostgreSQL (5432, trust auth for 127.0.0.1), Redis (6379) and RabbitMQ (5672, the
# guest user) on 127.0.0.1 unless already running; install them with apt-get when missing.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  [ "$apt_updated" = 1 ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}
wait_for() {  # wait_for <what> <command...>: up to WAIT_SECONDS (default 30)
  local what=$1 deadline=$((SECONDS + ${WAIT_SECONDS:-30})); shift
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "services: $what did not come up in ${WAIT_SECONDS:-30}s" >&2; return 1
    fi
    sleep 0.5
  done
}
answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }  # answers <host> <port>: TCP connects

if ! (command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432); then
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "services: installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  version=$(ls /etc/postgresql | sort -V | tail -1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    echo "services: trusting local TCP connections in $hba"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  echo "services: starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
fi

if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG); then
  command -v redis-server >/dev/null || { echo "services: installing Redis"; apt_install redis-server; }
  echo "services: starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/agentflow.log
  wait_for Redis sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
fi
if ! answers 127.0.0.1 5672; then
  if ! command -v rabbitmq-server >/dev/null && [ ! -x /usr/sbin/rabbitmq-server ]; then
    echo "services: installing RabbitMQ"  # (/usr/sbin is not on every user's PATH)
    apt_install rabbitmq-server
  fi
  if ! answers 127.0.0.1 5672; then  # the package may have started it
    echo "services: starting RabbitMQ"
    # A node still booting refuses a second start: the wait below covers both.
    as_root rabbitmq-server -detached || true
  fi
  WAIT_SECONDS=120 wait_for RabbitMQ answers 127.0.0.1 5672  # Erlang boots slowly on 2 cores
fi
echo "services: PostgreSQL, Redis and RabbitMQ are up"
