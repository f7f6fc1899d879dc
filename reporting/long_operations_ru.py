"""reports/long-operations.ru.md: the answer, in Russian, to "why should no long operation run
inside one session context?", written from this run's long_operations measurements.

The figures are the dicts `lab.long_operations.run_all` returns (the same code the notebook
runs); this module only says them in Russian. Nothing here is typed: a figure missing from a
measurement is an error, a point that does not apply to a backend says why.

    python -m reporting.long_operations_ru [--db sqlite|postgresql|mariadb|all] [--out reports/long-operations.ru.md]

measures (and stores the measurements in results/long_operations/<timestamp>/, with a `latest`
link), then writes the document; `make report` writes it from the latest stored measurements,
measuring first on the backends it runs when there are none.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from lab import databases, long_operations, results as stored, seed
from lab.engine import REPO_ROOT

OUT = REPO_ROOT / "reports" / "long-operations.ru.md"
STORE = REPO_ROOT / "results" / "long_operations"
BACKEND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mariadb": "MariaDB"}


# ---- Russian numbers and words ---------------------------------------------------------------

def number(value: float, digits: int = 2) -> str:
    """0.461 -> "0,46": a decimal comma, as Russian text writes it."""
    return f"{value:.{digits}f}".replace(".", ",")


def megabytes(size: float) -> str:
    return f"{number(size / 1e6, 1)} МБ"


def plural(count: int, one: str, few: str, many: str) -> str:
    """The form of a Russian noun after a number: 1 коммит, 2 коммита, 5 коммитов."""
    tail, tens = count % 10, count % 100
    form = one if tail == 1 and tens != 11 else few if 2 <= tail <= 4 and not 12 <= tens <= 14 else many
    return f"{count} {form}"


def milliseconds(seconds: float) -> str:
    return f"{round(seconds * 1000)} мс"


# ---- the points, one sentence group per backend -------------------------------------------

def stale_snapshot(point: dict[str, Any]) -> str:
    parts = []
    for run in point["runs"]:
        level = run["isolation_level"] + (" (уровень по умолчанию)" if run["default_level"] else "")
        total = len(run["reads"])
        if run["stale_reads"] == 0:
            parts.append(f"на {level} открытая транзакция видела каждый из {plural(total, 'коммита', 'коммитов', 'коммитов')} "
                         f"другой сессии сразу: READ COMMITTED берёт новый снимок на каждый запрос")
            continue
        text = (f"на {level} открытая транзакция продолжала читать версию {run['version_at_first_read']} "
                f"после {run['stale_reads']} из {plural(total, 'коммита', 'коммитов', 'коммитов')} другой сессии, "
                f"в течение {number(run['seconds_stale'])} с")
        if run["stale_until_transaction_ended"]:
            text += ", до самого конца транзакции"
        text += f"; сразу после её конца чтение вернуло версию {run['version_after_transaction_ended']}"
        parts.append(text)
    return "; ".join(parts) + "."


def _attempt(attempt: dict[str, Any], ending: str) -> str:
    """What an UPDATE attempt did; `ending` agrees the verbs with the subject ("а": сессия, "о": обновление)."""
    if attempt["outcome"] == "error":
        return (f"ждал{ending} {number(attempt['waited_s'])} с и упал{ending} с ошибкой "
                f"`{attempt.get('driver_error_class') or attempt['error_class']}: {attempt['message']}`")
    return f"прошл{ending} за {number(attempt['waited_s'])} с"


def row_lock_wait(point: dict[str, Any]) -> str:
    same, other, after = point["same_row"], point["other_row"], point["same_row_after_long_operation_ended"]
    scope = "всю базу (SQLite допускает одного пишущего на файл)" if point["lock_scope"] == "database" else "одну строку"
    return (f"пока долгая транзакция держала обновлённую ею строку, вторая сессия с ожиданием блокировки "
            f"`{same['timeout_setting']}` пыталась обновить ту же строку: {_attempt(same, 'а')}; другую строку: "
            f"{_attempt(other, 'а')}, то есть блокировка накрыла {scope}. Как только долгая транзакция закончилась, "
            f"то же обновление {_attempt(after, 'о')}.")


def pool_exhaustion(point: dict[str, Any]) -> str:
    request, after = point["request"], point["request_after_one_session_ended"]
    sessions = plural(point["long_sessions"], "долгая сессия", "долгие сессии", "долгих сессий")
    text = (f"{sessions} заняли все соединения пула ({point['pool_class']}, pool_size={point['pool_size']}, "
            f"max_overflow={point['max_overflow']}, pool_timeout={number(point['pool_timeout_s'], 0)} с); "
            f"следующий запрос ")
    if request["outcome"] == "error":
        text += (f"ждал соединения {number(request['waited_s'])} с и получил "
                 f"`{request['error_class']}: {request['message']}`")
    else:
        text += f"получил соединение через {number(request['waited_s'])} с"
    return text + f". Когда одна из сессий закрылась, соединение нашлось за {milliseconds(after['waited_s'])}."


def vacuum_held_back(point: dict[str, Any]) -> str:
    parts = []
    for variant in point["variants"]:
        holder = (f"backend_xmin {variant['backend_xmin']}" if variant["backend_xmin"] else
                  f"backend_xid {variant['backend_xid']}" if variant["backend_xid"] else "ни backend_xmin, ни backend_xid")
        did = "прочитала" if variant["idle_session_did"] == "read" else "записала"
        kept = variant["dead_rows_while_open"]
        parts.append(f"сессия на {variant['isolation_level']}, которая {did} и осталась в состоянии "
                     f"«{variant['state']}» ({holder}): VACUUM оставил {plural(kept, 'мёртвую строку', 'мёртвые строки', 'мёртвых строк')}, "
                     f"после конца её транзакции — {variant['dead_rows_after_end']}")
    return (f"другая сессия обновила строки {plural(point['updates'], 'раз', 'раза', 'раз')}, затем запускался VACUUM: "
            + "; ".join(parts) + ". Мёртвые версии строк держит не сама долгая операция, а открытая транзакция, "
            "у которой есть снимок или свой номер транзакции: таблица и её индексы растут, пока она открыта.")


def wal_growth(point: dict[str, Any]) -> str:
    without, with_reader, after = point["without_reader"], point["with_reader"], point["after_reader_ended"]
    checkpoint = with_reader["checkpoint"]
    return (f"после {plural(point['write_transactions'], 'пишущей транзакции', 'пишущих транзакций', 'пишущих транзакций')} "
            f"файл -wal занимал {megabytes(without['wal_bytes'])} без читателя и {megabytes(with_reader['wal_bytes'])}, "
            f"пока читатель держал старый снимок: чекпойнт перенёс в базу {checkpoint['checkpointed_frames']} из "
            f"{checkpoint['wal_frames']} кадров, остальные нужны снимку читателя. Когда читатель закончил, "
            f"чекпойнт TRUNCATE оставил {after['wal_bytes']} байт.")


def session_memory(point: dict[str, Any]) -> str:
    names = {"one long session, job keeps the objects": "одна долгая сессия, задача держит объекты",
             "one long session, job keeps only figures": "одна долгая сессия, задача держит только цифры",
             "a new session per batch, job keeps only figures": "новая сессия на каждую пачку, задача держит только цифры"}
    parts = [f"{names[v['variant']]}: в identity map до {plural(v['identity_map_max'], 'объекта', 'объектов', 'объектов')}, "
             f"пик {megabytes(v['peak_bytes'])}, к концу удержано {megabytes(v['held_bytes_at_end'])}"
             for v in point["variants"]]
    kept = point["variants"][0]["peak_bytes"]
    fresh = max(point["variants"][-1]["peak_bytes"], 1)
    rows = point["variants"][0]["rows_loaded"]
    return ("; ".join(parts) + f". На тех же {plural(rows, 'строке', 'строках', 'строках')} долгая сессия, "
            f"державшая объекты, заняла в пике в {number(kept / fresh, 1)} раза больше памяти, чем сессия на пачку "
            f"(пачка — {point['batch_size']} строк).")


# Why a point does not apply to a backend, in Russian (long_operations gives the reason in English).
NOT_APPLICABLE = {
    "vacuum_held_back": "только в PostgreSQL: VACUUM и backend_xmin есть только там (InnoDB вычищает старые версии "
                        "строк из undo-лога в фоне, SQLite держит старые страницы в WAL: см. пункт 5)",
    "wal_growth": "только в SQLite: там старый снимок читателя живёт в файле -wal; PostgreSQL и MariaDB держат старые "
                  "версии строк в таблице или в undo-логе (см. пункт 4)",
}

POINTS: dict[str, tuple[str, str, Callable[[dict[str, Any]], str]]] = {
    "stale_snapshot": (
        "Устаревший снимок",
        "Транзакция, которая однажды прочитала строку, на REPEATABLE READ (MariaDB и SQLite по умолчанию, "
        "PostgreSQL по запросу) продолжает видеть свой первый снимок: чужие коммиты для неё не существуют, пока "
        "она не закончится. Долгая операция в одной сессии — это долгая транзакция, и всё, что она показывает или "
        "пишет на основе прочитанного, устаревает.",
        stale_snapshot),
    "row_lock_wait": (
        "Ожидание блокировок",
        "Строки, которые транзакция изменила, заблокированы до её конца. Долгая операция, успевшая что-то "
        "записать, заставляет ждать всех, кто пишет те же строки (а в SQLite — всех, кто пишет вообще), и по "
        "таймауту их запросы падают.",
        row_lock_wait),
    "pool_exhaustion": (
        "Исчерпание пула соединений",
        "Пока сессия в транзакции, она держит соединение из пула. Несколько долгих операций занимают весь пул, "
        "и обычные запросы приложения ждут соединения, а после pool_timeout получают ошибку.",
        pool_exhaustion),
    "vacuum_held_back": (
        "VACUUM не может убрать мёртвые строки (PostgreSQL)",
        "PostgreSQL хранит старые версии строк в самой таблице, пока их может увидеть хоть одна открытая "
        "транзакция. Сессия, застрявшая в «idle in transaction», не даёт VACUUM их удалить.",
        vacuum_held_back),
    "wal_growth": (
        "Рост WAL-файла (SQLite)",
        "В режиме WAL SQLite не может перенести в базу и сбросить журнал дальше самого старого снимка, который "
        "ещё читают. Долгий читатель — и файл -wal растёт с каждой записью.",
        wal_growth),
    "session_memory": (
        "Память",
        "Сессия держит загруженные объекты в identity map, пока на них есть ссылки, а долгая операция обычно их "
        "накапливает. Сессия на каждую пачку работы отдаёт память после пачки.",
        session_memory),
}

RULES = [
    "Одна сессия и одна короткая транзакция на запрос или на единицу работы фоновой задачи: в Flask это "
    "`db.session` Flask-SQLAlchemy, которая удаляется в конце контекста приложения; в задаче — новый контекст "
    "приложения (или новая сессия) на каждое задание.",
    "Долгую работу делить на пачки: прочитать пачку, обработать, `commit()`, закрыть сессию; между пачками не "
    "держать ORM-объекты, только идентификаторы и цифры.",
    "Ничего не ждать внутри транзакции: ни сети, ни пользователя, ни внешних API, ни `sleep`. Сначала собрать "
    "данные, потом открыть транзакцию, записать и закоммитить.",
    "На PostgreSQL включить `idle_in_transaction_session_timeout`, `statement_timeout` и `lock_timeout`; на "
    "MariaDB — `innodb_lock_wait_timeout`; в SQLite — `busy_timeout`. Так застрявшая транзакция заканчивается "
    "ошибкой, а не держит всех.",
    "Если нужен согласованный снимок на время отчёта, брать его явно и коротко (REPEATABLE READ на одну "
    "транзакцию отчёта), а не держать сессию открытой часами.",
    "Следить за `pg_stat_activity` (state = 'idle in transaction', возраст `xact_start`) и размером -wal: это "
    "первые признаки долгой транзакции в работающей системе.",
]


def render(results: dict[str, dict[str, Any]], when: dt.datetime | None = None) -> str:
    """The whole document from `{backend: long_operations.run_all(...)}`."""
    if not results:
        raise ValueError("no measurement to write about")
    stamp = (when or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    servers = ", ".join(r["server"] for r in results.values())
    lines = [
        "# Почему долгая операция не должна жить в одном контексте сессии",
        "",
        "Вопрос: почему нельзя выполнять долгую операцию (импорт, отчёт, фоновую задачу, цикл по тысячам строк) "
        "внутри одного контекста сессии SQLAlchemy? Короткий ответ: сессия в транзакции держит снимок данных, "
        "блокировки, соединение из пула и загруженные объекты, и держит их всё время, пока операция идёт. "
        "Ниже каждый вред измерен в этом запуске, на каждой базе отдельно.",
        "",
        f"Измерено {stamp} на {servers} кодом `lab/long_operations.py` (тем же, что выполняет ноутбук "
        "`notebooks/long_operations.ipynb`); текст собран `python -m reporting.long_operations_ru` из этих измерений, "
        "цифры не вписаны руками.",
    ]
    for number_, (name, (title, why, say)) in enumerate(POINTS.items(), start=1):
        lines += ["", f"## {number_}. {title}", "", why, ""]
        for backend, result in results.items():
            point = result["points"][name]
            server = result["server"]
            if point["applies"]:
                lines.append(f"- **{server}**: {say(point)}")
            else:
                lines.append(f"- **{server}**: не применимо — {NOT_APPLICABLE[name]}.")
    lines += ["", "## Правила, которые из этого следуют", ""]
    lines += [f"{n}. {rule}" for n, rule in enumerate(RULES, start=1)]
    lines += ["", "Как проверить у себя: `python -m lab.long_operations --db all` печатает те же измерения по-английски, "
              "`make report` пересобирает этот файл вместе с отчётом.", ""]
    return "\n".join(lines)


def measure(backends: list[str], rows: int = long_operations.CLI_SEED_SIZE) -> dict[str, dict[str, Any]]:
    """long_operations.run_all on a private, seeded database per backend (dropped after)."""
    results = {}
    for backend in backends:
        sqlite_dir = Path(tempfile.mkdtemp(prefix="lab_longops_ru_"))
        try:
            url = databases.private_database(backend, f"lab_longops_ru_{databases.owner_tag('main')}", sqlite_dir)
            try:
                with long_operations.lab_engine(url) as engine:
                    seed.create_schema(engine)
                    seed.seed(engine, rows)
                results[backend] = long_operations.run_all(url)
            finally:
                databases.drop_database(url)
        finally:
            shutil.rmtree(sqlite_dir, ignore_errors=True)
    return results


def store(results: dict[str, dict[str, Any]], folder: Path = STORE) -> Path:
    """Keep a run's measurements (results/long_operations/<timestamp>/measurements.json, `latest`)."""
    started = dt.datetime.now(dt.timezone.utc)
    run_dir = stored.new_run_dir(folder, started)
    (run_dir / "measurements.json").write_text(json.dumps(
        {"measured_at": started.isoformat(), "results": results}, indent=1, default=str) + "\n")
    stored.link_latest(run_dir)
    return run_dir / "measurements.json"


def latest(folder: Path = STORE) -> tuple[dict[str, dict[str, Any]], dt.datetime] | None:
    path = folder / "latest" / "measurements.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data["results"], dt.datetime.fromisoformat(data["measured_at"])


def write(results: dict[str, dict[str, Any]], out: Path = OUT, when: dt.datetime | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results, when))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reporting.long_operations_ru", description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=[*databases.BACKENDS, "all"], default="all")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    backends = list(databases.BACKENDS) if args.db == "all" else [args.db]
    try:
        measured = measure(backends)
        store(measured)
        path = write(measured, args.out)
    except databases.BackendUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
