#!/usr/bin/env bash
# Undo scripts/services.sh (run by `make clean`):
# - drop every database whose name starts with `lab` and the `lab` login, on both servers,
#   as the administrator over the local socket; other databases (postgres, test, ...) are
#   never touched;
# - stop a server only if the lab started it (marker .lab/started-<server>), then remove the
#   marker. A server that is down is skipped with a note, not an error.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LAB_DIR="$REPO_ROOT/.lab"

PG_PORT=5432
REPLICA_CLUSTER=lab_standby
MARIADB_SOCKET=/run/mysqld/mysqld.sock
MARIADB_PIDFILE=/run/mysqld/lab.pid

note() { echo "clean.sh: $*"; }

if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
    # cd / first: the postgres user may not be allowed into the repo directory.
    as_postgres() { (cd / && runuser -u postgres -- "$@"); }
else
    as_root() { sudo -- "$@"; }
    as_postgres() { (cd / && sudo -u postgres -- "$@"); }
fi

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------
pg_answers() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; }
pg_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@"; }

if pg_answers; then
    pg_admin -At -c "SELECT datname FROM pg_database WHERE datname LIKE 'lab%' AND NOT datistemplate" |
    while IFS= read -r db; do
        # Terminate the sessions on it first, or DROP DATABASE waits and then fails.
        # (psql's :'db' / :"db" quote the name as a literal / an identifier.)
        pg_admin -v db="$db" <<'SQL'
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = :'db' AND pid <> pg_backend_pid() \g /dev/null
DROP DATABASE IF EXISTS :"db";
SQL
        note "PostgreSQL: dropped database $db"
    done
    # The role may still own objects in a non-lab database: report it, don't fail.
    if pg_admin -At -c "SELECT 1 FROM pg_roles WHERE rolname = 'lab'" | grep -q 1; then
        pg_admin -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'lab'" >/dev/null
        if pg_admin -c 'DROP ROLE lab'; then
            note "PostgreSQL: dropped role lab"
        else
            note "PostgreSQL: could not drop role lab (see above); left in place"
        fi
    fi
else
    note "PostgreSQL does not answer on 127.0.0.1:$PG_PORT: skipping its databases and role"
fi

# The hot standby is the lab's own cluster: dropped whole (stopped first) if the lab created it.
if [ -f "$LAB_DIR/created-replica" ]; then
    pg_version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    if [ -f "/etc/postgresql/$pg_version/$REPLICA_CLUSTER/postgresql.conf" ]; then
        as_root pg_dropcluster --stop "$pg_version" "$REPLICA_CLUSTER"
        as_root rm -rf "/etc/postgresql/$pg_version/$REPLICA_CLUSTER"  # the conf.d/ it may leave behind
        note "PostgreSQL hot standby $pg_version/$REPLICA_CLUSTER stopped and dropped (the lab had created it)"
    fi
    rm -f "$LAB_DIR/created-replica" "$LAB_DIR/started-replica"
elif [ -f "$LAB_DIR/started-replica" ]; then
    pg_version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$REPLICA_CLUSTER" stop || true
    rm -f "$LAB_DIR/started-replica"
    note "PostgreSQL hot standby stopped (the lab had started it)"
fi

if [ -f "$LAB_DIR/started-postgresql" ]; then
    pg_version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    # status exits non-zero when the cluster is already down: nothing to stop then.
    if as_root pg_ctlcluster "$pg_version" main status >/dev/null 2>&1; then
        as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" main stop
        note "PostgreSQL $pg_version/main stopped (the lab had started it)"
    fi
    rm -f "$LAB_DIR/started-postgresql"
else
    note "PostgreSQL was not started by the lab: left as it is"
fi

# ---------------------------------------------------------------------------------------------
# MariaDB
# ---------------------------------------------------------------------------------------------
mariadb_answers() {
    mariadb-admin --protocol=socket --socket="$MARIADB_SOCKET" -uroot --connect-timeout=2 ping \
        >/dev/null 2>&1
}
# root authenticates by unix_socket on Debian: only OS root over the socket is reliable.
mariadb_admin() { as_root mariadb --protocol=socket --socket="$MARIADB_SOCKET" -uroot -N -B "$@"; }

if mariadb_answers; then
    # Kill the lab's sessions first: an open transaction holds metadata locks and
    # DROP DATABASE would wait for it forever. (A session may end on its own meanwhile.)
    mariadb_admin -e "SELECT id FROM information_schema.processlist
                      WHERE (user = 'lab' OR db LIKE BINARY 'lab%') AND id <> CONNECTION_ID()" |
    while read -r id; do
        mariadb_admin -e "KILL $id" </dev/null 2>/dev/null || true
    done
    # LIKE BINARY: case-sensitive, like the database names themselves.
    mariadb_admin -e "SELECT schema_name FROM information_schema.schemata
                      WHERE schema_name LIKE BINARY 'lab%'" |
    while IFS= read -r db; do
        mariadb_admin -e "DROP DATABASE IF EXISTS \`${db//\`/\`\`}\`" </dev/null
        note "MariaDB: dropped database $db"
    done
    mariadb_admin -e "DROP USER IF EXISTS 'lab'@'127.0.0.1', 'lab'@'localhost'"
    note "MariaDB: dropped user lab (@127.0.0.1 and @localhost)"
else
    note "MariaDB does not answer on $MARIADB_SOCKET: skipping its databases and user"
fi

# The delayed replica is the lab's own server: stopped, and its data directory removed if the
# lab made it. The primary keeps its binary log (the lab restarted it with one, and did not
# start it): it stays up as it is.
MARIADB_REPLICA_DATA=/var/lib/mysql-lab-replica
MARIADB_REPLICA_PIDFILE=/run/mysqld/lab-replica.pid
if [ -f "$MARIADB_REPLICA_PIDFILE" ]; then
    as_root start-stop-daemon --stop --oknodo --quiet --pidfile "$MARIADB_REPLICA_PIDFILE" \
        --exec /usr/sbin/mariadbd --retry 30
    as_root rm -f "$MARIADB_REPLICA_PIDFILE"
    note "MariaDB replica stopped"
fi
if [ -f "$LAB_DIR/created-mariadb-replica" ]; then
    as_root rm -rf "$MARIADB_REPLICA_DATA"
    note "MariaDB replica's data directory $MARIADB_REPLICA_DATA removed (the lab had made it)"
fi
rm -f "$LAB_DIR/created-mariadb-replica" "$LAB_DIR/started-mariadb-replica" "$LAB_DIR"/mariadb-replica*
if mariadb_answers; then
    mariadb_admin -e "DROP USER IF EXISTS 'lab_repl'@'127.0.0.1'"
fi
if [ -f "$LAB_DIR/started-mariadb" ]; then
    # --exec guards against a stale pidfile whose pid now belongs to another program;
    # --retry 30: SIGTERM, wait up to 30 s, then SIGKILL.
    as_root start-stop-daemon --stop --oknodo --quiet --pidfile "$MARIADB_PIDFILE" \
        --exec /usr/sbin/mariadbd --retry 30
    as_root rm -f "$MARIADB_PIDFILE"
    rm -f "$LAB_DIR/started-mariadb" "$LAB_DIR/mariadbd.out"
    note "MariaDB stopped (the lab had started it)"
else
    note "MariaDB was not started by the lab: left as it is"
fi

# ---------------------------------------------------------------------------------------------
# Redis: the lab's keys are in database 7 only; the server is stopped only if the lab started it
# ---------------------------------------------------------------------------------------------
REDIS_PORT=6379
REDIS_DB=7
if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -n "$REDIS_DB" flushdb >/dev/null
    note "Redis: emptied the lab's database $REDIS_DB"
    if [ -f "$LAB_DIR/started-redis" ]; then
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        note "Redis stopped (the lab had started it)"
    fi
else
    note "Redis does not answer on 127.0.0.1:$REDIS_PORT: skipping it"
fi
rm -f "$LAB_DIR/started-redis"
