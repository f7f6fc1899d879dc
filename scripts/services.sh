#!/usr/bin/env bash
# Make PostgreSQL (with a hot standby of it), MariaDB (with a delayed replica of it) and Redis
# (the task queue's broker) available on 127.0.0.1 for the lab (run by `make services`).
#
# - Installs a server if it is missing, starts it if it does not answer, and records in
#   .lab/started-<server> that the lab started it (so `make clean` stops only what we started).
# - Creates the lab's own login `lab`/`lab` and the databases `lab` and `lab_test` while
#   connected as the administrator over the local socket: that works whatever the machine
#   uses for TCP auth (trust, password, ...), so we never depend on trust over TCP.
# - Verifies that `lab` can log in over TCP with its password, the way the tests connect.
# - The replicas exist for the replica_lag cause: each replays its primary a fixed 1 s late. The
#   MariaDB primary needs a binary log for it: one that has none is restarted once with one.
# - Idempotent: a second run creates, alters and starts nothing.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LAB_DIR="$REPO_ROOT/.lab"
WAIT_SECONDS=30

PG_PORT=5432
# The hot standby (the replica_lag cause): a streaming replica of the cluster on PG_PORT, whose
# replay is held back by a fixed apply delay, so that "the replica is behind" is deterministic.
REPLICA_PORT=5433
REPLICA_CLUSTER=lab_standby
REPLICA_APPLY_DELAY=1s
MARIADB_PORT=3306
MARIADB_SOCKET=/run/mysqld/mysqld.sock
MARIADB_PIDFILE=/run/mysqld/lab.pid
# The primary writes a binary log (row format, GTIDs) so that a replica can follow it.
MARIADB_BINLOG_OPTIONS=(--log-bin=lab-binlog --server-id=1 --binlog-format=ROW --binlog-expire-logs-seconds=86400)
# The delayed replica (the replica_lag cause): a second mariadbd of the lab's own, following
# the primary's `lab%` databases, whose SQL thread applies each transaction MASTER_DELAY seconds
# after the primary's timestamp of it (binlog timestamps carry microseconds: the lag is the
# delay, whatever the moment of the commit within its second).
MARIADB_REPLICA_PORT=3307
MARIADB_REPLICA_DELAY=1
MARIADB_REPLICA_DATA=/var/lib/mysql-lab-replica
MARIADB_REPLICA_SOCKET=/run/mysqld/lab-replica.sock
MARIADB_REPLICA_PIDFILE=/run/mysqld/lab-replica.pid
REDIS_PORT=6379
REDIS_DB=7  # the lab's keys live in this database of the server only
REDIS_PIDFILE=/run/redis-lab.pid

export DEBIAN_FRONTEND=noninteractive

die() { echo "services.sh: ERROR: $*" >&2; exit 1; }
note() { echo "services.sh: $*"; }

# Installing, starting servers and socket auth as root/postgres need root; use sudo otherwise.
if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
    # cd / first: the postgres user may not be allowed into the repo directory.
    as_postgres() { (cd / && runuser -u postgres -- "$@"); }
else
    command -v sudo >/dev/null || die "run as root (or install sudo): servers must be installed/started as root"
    as_root() { sudo -- "$@"; }
    as_postgres() { (cd / && sudo -u postgres -- "$@"); }
fi

mkdir -p "$LAB_DIR"
# .lab/ holds machine state (markers, logs), never commit it.
[ -f "$LAB_DIR/.gitignore" ] || echo '*' > "$LAB_DIR/.gitignore"

apt_install() {
    # A clean machine (CI) may have no package lists yet: update once and retry.
    as_root apt-get install -y -q "$@" >/dev/null \
        || { as_root apt-get update -q >/dev/null && as_root apt-get install -y -q "$@" >/dev/null; } \
        || die "apt-get install $* failed"
}

# wait_until <command...>: poll every 0.5 s, give up after WAIT_SECONDS.
wait_until() {
    local i
    for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
        if "$@"; then return 0; fi
        sleep 0.5
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------
pg_answers() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; }
pg_cluster_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }
pg_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@"; }
pg_lab_login() {
    PGPASSWORD=lab PGCONNECT_TIMEOUT=5 psql -X -At -h 127.0.0.1 -p "$PG_PORT" -U lab -d lab \
        -c 'select 1' >/dev/null 2>"$LAB_DIR/postgresql-login.err"
}

pg_hba_file() { pg_admin -At -c 'SHOW hba_file'; }
# pg_hba_prepend <rule> <why>: put the rule first (the first matching line wins), with a comment.
# Rewritten in place (cat >, not sed -i) so the file keeps its owner and mode.
pg_hba_prepend() {
    local hba_file
    hba_file="$(pg_hba_file)"
    { echo "# added by the lab (scripts/services.sh): $2"
      echo "$1"
      as_root cat "$hba_file"; } > "$LAB_DIR/pg_hba.conf.new"
    as_root sh -c 'cat "$1" > "$2"' sh "$LAB_DIR/pg_hba.conf.new" "$hba_file"
    rm -f "$LAB_DIR/pg_hba.conf.new"
}

if ! pg_answers; then
    if [ -z "$(pg_cluster_version)" ]; then
        note "PostgreSQL not installed: installing (apt-get install postgresql)"
        apt_install postgresql
        # The package normally creates the cluster; create it if this machine's packaging did not.
        if [ -z "$(pg_cluster_version)" ]; then
            pg_bin_version="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)"
            [ -n "$pg_bin_version" ] || die "apt-get install postgresql left no server in /usr/lib/postgresql"
            as_root pg_createcluster "$pg_bin_version" main >/dev/null
        fi
    fi
    # apt may have started it already (where policy-rc.d allows); if not, start it ourselves.
    if ! pg_answers; then
        pg_version="$(pg_cluster_version)"
        note "starting PostgreSQL $pg_version/main"
        as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start \
            || die "pg_ctlcluster $pg_version main start failed (see /var/log/postgresql/)"
    fi
    # Either way the lab brought it up, so `make clean` may bring it down.
    touch "$LAB_DIR/started-postgresql"
    wait_until pg_answers \
        || die "PostgreSQL does not answer on 127.0.0.1:$PG_PORT after ${WAIT_SECONDS}s (see /var/log/postgresql/)"
fi

# Role and databases, as the postgres superuser over the socket. Only create/alter what is
# missing or wrong, so that a second run changes nothing.
pg_admin <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lab') THEN
        CREATE ROLE lab LOGIN CREATEDB PASSWORD 'lab';
    ELSIF NOT (SELECT rolcanlogin AND rolcreatedb AND rolpassword IS NOT NULL
               FROM pg_authid WHERE rolname = 'lab') THEN
        ALTER ROLE lab LOGIN CREATEDB PASSWORD 'lab';
    END IF;
END
$$;
-- CREATE DATABASE cannot run inside DO (it needs to be outside a transaction): use \gexec.
SELECT format('CREATE DATABASE %I OWNER lab', d)
FROM unnest(ARRAY['lab', 'lab_test']) AS d
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d)
\gexec
SELECT format('ALTER DATABASE %I OWNER TO lab', datname)
FROM pg_database
WHERE datname IN ('lab', 'lab_test') AND pg_get_userbyid(datdba) <> 'lab'
\gexec
SQL

# The tests log in over TCP with a password. If pg_hba.conf does not allow that for 127.0.0.1
# (e.g. ident/peer/reject, or a stored password in another format), put a rule for `lab` first
# (first matching line wins), reset the password in SCRAM format and reload.
if ! pg_lab_login; then
    note "PostgreSQL: password login over TCP failed ($(head -n 1 "$LAB_DIR/postgresql-login.err")); fixing pg_hba.conf"
    hba_rule="host all lab 127.0.0.1/32 scram-sha-256"
    if ! as_root grep -qxF "$hba_rule" "$(pg_hba_file)"; then
        pg_hba_prepend "$hba_rule" "password login for lab over TCP"
    fi
    pg_admin <<'SQL'
SET password_encryption = 'scram-sha-256';
ALTER ROLE lab PASSWORD 'lab';
SELECT pg_reload_conf() \g /dev/null
SQL
    pg_lab_login || die "PostgreSQL: user lab cannot log in over 127.0.0.1:$PG_PORT: $(cat "$LAB_DIR/postgresql-login.err")"
fi
rm -f "$LAB_DIR/postgresql-login.err"
pg_server_version="$(PGPASSWORD=lab psql -X -At -h 127.0.0.1 -p "$PG_PORT" -U lab -d lab -c 'SHOW server_version')"

# ---------------------------------------------------------------------------------------------
# PostgreSQL hot standby of the cluster above (streaming replication, delayed apply)
# ---------------------------------------------------------------------------------------------
pg_version="$(pg_cluster_version)"
replica_conf="/etc/postgresql/$pg_version/$REPLICA_CLUSTER"
replica_data="/var/lib/postgresql/$pg_version/$REPLICA_CLUSTER"
replica_sql() {
    PGPASSWORD=lab PGCONNECT_TIMEOUT=5 psql -X -At -h 127.0.0.1 -p "$REPLICA_PORT" -U lab -d lab -c "$1" 2>/dev/null
}
replica_ready() { [ "$(replica_sql 'SELECT pg_is_in_recovery()')" = "t" ]; }
# A cluster pg_lsclusters knows (pg_dropcluster may leave an empty conf.d/ behind: not a cluster).
replica_exists() { [ -f "$replica_conf/postgresql.conf" ]; }

if ! replica_ready; then
    if ! replica_exists; then
        if pg_isready -q -h 127.0.0.1 -p "$REPLICA_PORT" 2>/dev/null; then
            die "port $REPLICA_PORT answers but is not the lab's standby ($REPLICA_CLUSTER): free it or change REPLICA_PORT"
        fi
        note "creating the PostgreSQL hot standby $pg_version/$REPLICA_CLUSTER on port $REPLICA_PORT"
        # A base backup over the primary's socket as postgres needs a `replication` rule in its
        # pg_hba.conf (the `all` database keyword does not cover replication connections).
        if ! as_root grep -qE '^[[:space:]]*local[[:space:]]+replication[[:space:]]+(all|postgres)[[:space:]]' "$(pg_hba_file)"; then
            pg_hba_prepend "local replication postgres peer" "the standby's base backup and stream, as postgres over the socket"
            pg_admin -c 'SELECT pg_reload_conf()' >/dev/null
        fi
        as_root rm -rf "$replica_conf"  # what a dropped cluster left, if anything
        as_root pg_createcluster "$pg_version" "$REPLICA_CLUSTER" -p "$REPLICA_PORT" >/dev/null
        touch "$LAB_DIR/created-replica"
        as_root find "$replica_data" -mindepth 1 -delete
        # -R writes standby.signal and primary_conninfo (the primary's socket, as postgres).
        as_postgres pg_basebackup -p "$PG_PORT" -D "$replica_data" -R -X stream -c fast \
            || die "pg_basebackup from the primary on port $PG_PORT failed"
        primary_connections="$(pg_admin -At -c 'SHOW max_connections')"
        # A hot standby needs at least the primary's max_connections.
        as_root sh -c 'cat > "$1"' sh "$replica_conf/conf.d/lab-standby.conf" <<CONF
# written by the lab (scripts/services.sh): a hot standby whose replay waits a fixed delay
listen_addresses = '127.0.0.1'
hot_standby = on
recovery_min_apply_delay = '$REPLICA_APPLY_DELAY'
max_connections = $primary_connections
CONF
    fi
    note "starting the PostgreSQL hot standby $pg_version/$REPLICA_CLUSTER"
    as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$REPLICA_CLUSTER" start \
        || die "pg_ctlcluster $pg_version $REPLICA_CLUSTER start failed (see /var/log/postgresql/postgresql-$pg_version-$REPLICA_CLUSTER.log)"
    touch "$LAB_DIR/started-replica"
    wait_until replica_ready \
        || die "the hot standby does not answer as a replica on 127.0.0.1:$REPLICA_PORT after ${WAIT_SECONDS}s (see /var/log/postgresql/postgresql-$pg_version-$REPLICA_CLUSTER.log)"
fi
replica_delay="$(replica_sql 'SHOW recovery_min_apply_delay')"

# ---------------------------------------------------------------------------------------------
# MariaDB
# ---------------------------------------------------------------------------------------------
# `ping` succeeds as soon as the server answers on the socket, even if auth were refused.
mariadb_answers() {
    mariadb-admin --protocol=socket --socket="$MARIADB_SOCKET" -uroot --connect-timeout=2 ping \
        >/dev/null 2>&1
}
# root authenticates by unix_socket on Debian: only OS root over the socket is reliable.
mariadb_admin() { as_root mariadb --protocol=socket --socket="$MARIADB_SOCKET" -uroot "$@"; }
mariadb_lab_login() {
    MYSQL_PWD=lab mariadb -h 127.0.0.1 -P "$MARIADB_PORT" -ulab --connect-timeout=5 \
        -e 'select 1' >/dev/null 2>"$LAB_DIR/mariadb-login.err"
}

if [ ! -x /usr/sbin/mariadbd ]; then
    note "MariaDB not installed: installing (apt-get install mariadb-server)"
    apt_install mariadb-server
fi

if ! mariadb_answers; then
    note "starting MariaDB"
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld
    # As root, mariadbd refuses to run without --user=mysql (and dies silently in the
    # background); --output keeps its early stderr so a failed start can be diagnosed.
    as_root start-stop-daemon --start --oknodo --background --make-pidfile \
        --pidfile "$MARIADB_PIDFILE" --output "$LAB_DIR/mariadbd.out" \
        --exec /usr/sbin/mariadbd -- --user=mysql "${MARIADB_BINLOG_OPTIONS[@]}"
    touch "$LAB_DIR/started-mariadb"
    wait_until mariadb_answers \
        || die "MariaDB does not answer on $MARIADB_SOCKET after ${WAIT_SECONDS}s (see $LAB_DIR/mariadbd.out and the server's error log)"
fi

# User `lab` for both TCP (127.0.0.1) and socket (localhost) logins. `lab%` covers lab,
# lab_test and per-worker databases such as lab_test_gw0 (`_` is a wildcard too, harmless here).
# PROCESS lets lab see every session in the processlist. Without a privilege, MariaDB 10.11
# lets an account KILL only sessions of the same account (lab@127.0.0.1 cannot kill
# lab@localhost: error 1095 "not owner of thread", checked): CONNECTION ADMIN (10.5.2+) lets
# the lab kill all of its own sessions, whichever way they connected.
# IF NOT EXISTS and re-GRANTs change nothing on a rerun.
mariadb_admin <<'SQL'
CREATE USER IF NOT EXISTS 'lab'@'127.0.0.1' IDENTIFIED BY 'lab';
CREATE USER IF NOT EXISTS 'lab'@'localhost' IDENTIFIED BY 'lab';
CREATE DATABASE IF NOT EXISTS lab;
CREATE DATABASE IF NOT EXISTS lab_test;
GRANT ALL PRIVILEGES ON `lab%`.* TO 'lab'@'127.0.0.1', 'lab'@'localhost';
GRANT PROCESS, CONNECTION ADMIN ON *.* TO 'lab'@'127.0.0.1', 'lab'@'localhost';
SQL

# If `lab` existed with another password, reset it (only then, to keep reruns change-free).
if ! mariadb_lab_login; then
    note "MariaDB: password login over TCP failed ($(head -n 1 "$LAB_DIR/mariadb-login.err")); resetting the password"
    mariadb_admin -e "ALTER USER 'lab'@'127.0.0.1' IDENTIFIED BY 'lab'; ALTER USER 'lab'@'localhost' IDENTIFIED BY 'lab';"
    mariadb_lab_login || die "MariaDB: user lab cannot log in over 127.0.0.1:$MARIADB_PORT: $(cat "$LAB_DIR/mariadb-login.err")"
fi
rm -f "$LAB_DIR/mariadb-login.err"
mariadb_server_version="$(MYSQL_PWD=lab mariadb -h 127.0.0.1 -P "$MARIADB_PORT" -ulab -N -B -e 'select version()')"

# ---------------------------------------------------------------------------------------------
# MariaDB: a delayed replica of the server above (binary log, GTID, MASTER_DELAY)
# ---------------------------------------------------------------------------------------------
# log_bin cannot be switched on in a running server: if the primary writes no binary log, it
# is shut down cleanly and started again with one (the same server, its data and its my.cnf,
# plus MARIADB_BINLOG_OPTIONS on the command line). The lab did not start it, so `make clean`
# leaves it running.
if [ "$(mariadb_admin -N -B -e 'SELECT @@log_bin')" != "1" ]; then
    note "MariaDB writes no binary log (its replica needs one): restarting it with ${MARIADB_BINLOG_OPTIONS[*]}"
    primary_pid="$(as_root cat "$(mariadb_admin -N -B -e 'SELECT @@pid_file')")"
    mariadb_admin -e 'SHUTDOWN'
    # The socket stops answering a moment before the old process has let go of its files: wait
    # for that process (by its pid: the lab's replica is a mariadbd too).
    wait_until sh -c '! kill -0 "$1" 2>/dev/null' sh "$primary_pid" \
        || die "MariaDB (pid $primary_pid) did not shut down within ${WAIT_SECONDS}s"
    as_root rm -f "$MARIADB_PIDFILE"
    as_root start-stop-daemon --start --background --make-pidfile \
        --pidfile "$MARIADB_PIDFILE" --output "$LAB_DIR/mariadbd.out" \
        --exec /usr/sbin/mariadbd -- --user=mysql "${MARIADB_BINLOG_OPTIONS[@]}"
    wait_until mariadb_answers \
        || die "MariaDB does not answer on $MARIADB_SOCKET after its restart with a binary log (see $LAB_DIR/mariadbd.out)"
    [ "$(mariadb_admin -N -B -e 'SELECT @@log_bin')" = "1" ] || die "MariaDB restarted without a binary log"
fi
# With a binary log, MariaDB refuses CREATE TRIGGER to a user without SUPER unless
# log_bin_trust_function_creators is on (its documented switch; error 1419). The field's MLflow
# creates triggers in its schema as the lab's user, as its operators let it: set on the running server.
mariadb_admin -e 'SET GLOBAL log_bin_trust_function_creators = 1'

replica_admin() { as_root mariadb --protocol=socket --socket="$MARIADB_REPLICA_SOCKET" -uroot "$@"; }
replica_answers() {
    mariadb-admin --protocol=socket --socket="$MARIADB_REPLICA_SOCKET" -uroot --connect-timeout=2 ping >/dev/null 2>&1
}
# "Yes Yes" when both replication threads run.
replica_threads() {
    replica_admin -e 'SHOW SLAVE STATUS\G' 2>/dev/null |
        awk '/ Slave_IO_Running:/ {io=$2} / Slave_SQL_Running:/ {sql=$2} END {print io, sql}'
}
start_replica_server() {
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld
    # --no-defaults: none of the primary's my.cnf (its port, socket and datadir).
    as_root start-stop-daemon --start --oknodo --background --make-pidfile \
        --pidfile "$MARIADB_REPLICA_PIDFILE" --output "$LAB_DIR/mariadb-replica.out" \
        --exec /usr/sbin/mariadbd -- --no-defaults --user=mysql --datadir="$MARIADB_REPLICA_DATA" \
        --port="$MARIADB_REPLICA_PORT" --bind-address=127.0.0.1 --socket="$MARIADB_REPLICA_SOCKET" \
        --skip-name-resolve --server-id=2 --read-only --skip-log-bin --relay-log=lab-relay \
        --replicate-wild-do-table='lab%.%' --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_general_ci --log-error="$LAB_DIR/mariadb-replica.err"
    touch "$LAB_DIR/started-mariadb-replica"
    wait_until replica_answers \
        || die "the MariaDB replica does not answer on $MARIADB_REPLICA_SOCKET after ${WAIT_SECONDS}s (see $LAB_DIR/mariadb-replica.err)"
}
# Make the replica from scratch: an empty server, the primary's `lab%` databases copied in one
# consistent snapshot with the GTID position it was taken at, then replication from there.
create_replica() {
    if [ -f "$MARIADB_REPLICA_PIDFILE" ]; then
        as_root start-stop-daemon --stop --oknodo --quiet --pidfile "$MARIADB_REPLICA_PIDFILE" --exec /usr/sbin/mariadbd --retry 30
    fi
    as_root rm -rf "$MARIADB_REPLICA_DATA"
    as_root mariadb-install-db --no-defaults --user=mysql --datadir="$MARIADB_REPLICA_DATA" \
        --auth-root-authentication-method=socket --skip-test-db >"$LAB_DIR/mariadb-replica-install.log" 2>&1 \
        || die "mariadb-install-db for the replica failed (see $LAB_DIR/mariadb-replica-install.log)"
    touch "$LAB_DIR/created-mariadb-replica"
    start_replica_server
    mariadb_admin <<'SQL'
CREATE USER IF NOT EXISTS 'lab_repl'@'127.0.0.1' IDENTIFIED BY 'lab_repl';
GRANT REPLICATION SLAVE ON *.* TO 'lab_repl'@'127.0.0.1';
SQL
    local databases
    databases="$(mariadb_admin -N -B -e "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE BINARY 'lab%'")"
    # --master-data=2 --gtid: the snapshot's position as a comment, SET GLOBAL gtid_slave_pos='...'.
    # shellcheck disable=SC2086
    as_root mariadb-dump --protocol=socket --socket="$MARIADB_SOCKET" -uroot --single-transaction \
        --master-data=2 --gtid --routines --triggers --databases $databases > "$LAB_DIR/mariadb-replica-seed.sql" \
        || die "mariadb-dump of the primary's lab databases failed"
    local position
    position="$(sed -n "s/^-- SET GLOBAL gtid_slave_pos='\([^']*\)';/\1/p" "$LAB_DIR/mariadb-replica-seed.sql" | head -n 1)"
    replica_admin < "$LAB_DIR/mariadb-replica-seed.sql" || die "loading the primary's snapshot into the replica failed"
    rm -f "$LAB_DIR/mariadb-replica-seed.sql"
    replica_admin <<SQL
SET GLOBAL gtid_slave_pos = '$position';
CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $MARIADB_PORT, MASTER_USER = 'lab_repl',
    MASTER_PASSWORD = 'lab_repl', MASTER_USE_GTID = slave_pos, MASTER_DELAY = $MARIADB_REPLICA_DELAY,
    MASTER_CONNECT_RETRY = 1;
START SLAVE;
SQL
}

if [ ! -d "$MARIADB_REPLICA_DATA/mysql" ]; then
    if mariadb-admin -h 127.0.0.1 -P "$MARIADB_REPLICA_PORT" --connect-timeout=2 ping >/dev/null 2>&1; then
        die "port $MARIADB_REPLICA_PORT answers but is not the lab's MariaDB replica: free it or change MARIADB_REPLICA_PORT"
    fi
    note "creating the MariaDB replica on port $MARIADB_REPLICA_PORT (MASTER_DELAY = ${MARIADB_REPLICA_DELAY} s)"
    create_replica
elif ! replica_answers; then
    note "starting the MariaDB replica"
    start_replica_server
    replica_admin -e 'START SLAVE' 2>/dev/null || true
fi
# A replica whose SQL thread stopped on an error has diverged from its primary: made again.
replicating() {
    local i
    for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
        [ "$(replica_threads)" = "Yes Yes" ] && return 0
        sleep 0.5
    done
    return 1
}
if ! replicating; then
    note "the MariaDB replica does not replicate (IO, SQL threads running: $(replica_threads); $(replica_admin -e 'SHOW SLAVE STATUS\G' | sed -n 's/^ *Last_\(IO\|SQL\)_Error: \(..*\)/\2/p' | head -n 1)): making it again"
    create_replica
    replicating || die "the MariaDB replica does not replicate after it was made again (IO, SQL threads running: $(replica_threads); see $LAB_DIR/mariadb-replica.err)"
fi
# The lab's login on the replica: it reads (read_only keeps it from writing) and may watch
# replication (SLAVE MONITOR: SHOW SLAVE STATUS), not stop or change it.
replica_admin <<'SQL'
CREATE USER IF NOT EXISTS 'lab'@'127.0.0.1' IDENTIFIED BY 'lab';
CREATE USER IF NOT EXISTS 'lab'@'localhost' IDENTIFIED BY 'lab';
GRANT ALL PRIVILEGES ON `lab%`.* TO 'lab'@'127.0.0.1', 'lab'@'localhost';
GRANT PROCESS, CONNECTION ADMIN, SLAVE MONITOR ON *.* TO 'lab'@'127.0.0.1', 'lab'@'localhost';
SQL
if [ "$(replica_admin -e 'SHOW SLAVE STATUS\G' | sed -n 's/^ *SQL_Delay: //p')" != "$MARIADB_REPLICA_DELAY" ]; then
    note "the MariaDB replica: setting MASTER_DELAY = $MARIADB_REPLICA_DELAY"
    replica_admin -e "STOP SLAVE SQL_THREAD; CHANGE MASTER TO MASTER_DELAY = $MARIADB_REPLICA_DELAY; START SLAVE SQL_THREAD"
fi
mariadb_replica_delay="$(replica_admin -e 'SHOW SLAVE STATUS\G' | sed -n 's/^ *SQL_Delay: //p')"
MYSQL_PWD=lab mariadb -h 127.0.0.1 -P "$MARIADB_REPLICA_PORT" -ulab --connect-timeout=5 -e 'select 1' >/dev/null \
    || die "MariaDB replica: user lab cannot log in over 127.0.0.1:$MARIADB_REPLICA_PORT"

# ---------------------------------------------------------------------------------------------
# Redis: the broker and result store of the task queue (Celery) on the server backends
# ---------------------------------------------------------------------------------------------
redis_answers() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }
if ! redis_answers; then
    if ! command -v redis-server >/dev/null; then
        note "Redis not installed: installing (apt-get install redis-server)"
        apt_install redis-server
    fi
    if ! redis_answers; then
        note "starting Redis"
        as_root redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --pidfile "$REDIS_PIDFILE" \
            --dir "$LAB_DIR" --save "" --logfile "$LAB_DIR/redis.log"
        touch "$LAB_DIR/started-redis"
        wait_until redis_answers || die "Redis does not answer on 127.0.0.1:$REDIS_PORT after ${WAIT_SECONDS}s (see $LAB_DIR/redis.log)"
    fi
fi
redis_version="$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server | sed -n 's/^redis_version:\([0-9.]*\).*/\1/p')"

# ---------------------------------------------------------------------------------------------
echo "PostgreSQL ${pg_server_version%% *} ready on 127.0.0.1:$PG_PORT"
echo "PostgreSQL hot standby ready on 127.0.0.1:$REPLICA_PORT (replays the primary $replica_delay late)"
echo "MariaDB ${mariadb_server_version%%-*} ready on 127.0.0.1:$MARIADB_PORT"
echo "MariaDB replica ready on 127.0.0.1:$MARIADB_REPLICA_PORT (applies the primary ${mariadb_replica_delay} s late)"
echo "Redis $redis_version ready on 127.0.0.1:$REDIS_PORT"
echo "LAB_TEST_POSTGRESQL_URL=postgresql+psycopg://lab:lab@127.0.0.1:$PG_PORT/lab_test"
echo "LAB_TEST_POSTGRESQL_REPLICA_URL=postgresql+psycopg://lab:lab@127.0.0.1:$REPLICA_PORT/lab_test"
echo "LAB_TEST_MARIADB_URL=mysql+pymysql://lab:lab@127.0.0.1:$MARIADB_PORT/lab_test"
echo "LAB_TEST_MARIADB_REPLICA_URL=mysql+pymysql://lab:lab@127.0.0.1:$MARIADB_REPLICA_PORT/lab_test"
echo "LAB_TEST_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/$REDIS_DB"
