"""The project's own error types.

    EtlError                    anything the CLI turns into one line and an exit code
    ├── UsageError              bad option or configuration value (exit 2, nothing written)
    │   └── SettingError        one setting has a value it cannot take (names the setting)
    ├── DatabaseError           the database cannot be opened, read or written
    │   ├── UnusableDatabaseError  not a database at all (a text file, a damaged SQLite
    │   │                          file), or a PostgreSQL database or role that does not
    │   │                          exist, or a password refused (exit 2: fix --db)
    │   ├── SchemaError         none of cowrieprocessor's tables (without --create), or not
    │   │                       what the run needs (a table lacking a column; exit 2)
    │   ├── DatabaseBusyError   another writer's lock or a lost connection outlasted the wait
    │   └── RunLockedError      another refresh of the same database is running
    ├── MaxMindError            a named MaxMind file is missing or is not an mmdb
    └── ServiceError            a remote service is stopped for the rest of the run
        ├── ServiceUnavailableError requests failing or timing out again and again (the
        │                           circuit breaker: reason unreachable or stalled)
        ├── UnauthorizedError       the API key was refused (GreyNoise 401/403)
        ├── ThrottledError          the service asked us to wait longer than we may
        └── QuotaExhaustedError     the daily limit, or the run's budget, is spent

A ServiceError's ``reason`` labels the stop in the summary and the metrics; its
``run_exit_code`` is the exit code of a run that it leaves otherwise complete (SPEC 5): 3 when
the operator must act (key refused, service unreachable or stalled), 0 for normal limits.

Internal to the network clients, never shown: TransportError (a request got no HTTP answer:
refused, reset, timed out), which they retry and then record as ``status: error``, and which
counts towards their circuit breaker.

Per-IP service failures are not exceptions: they become ``status: error`` in the IP's block,
with why under its ``error`` key.
A ServiceError stops that source for the run; the run itself goes on.

Foreign errors (duckdb, sqlite3, maxminddb, OSError) are translated at the edge that
calls them, raised ``from`` the original, and with secrets redacted from the message.
"""

from __future__ import annotations

from collections.abc import Callable


class EtlError(Exception):
    """Base class: a failure with a message fit to show a user as one line."""

    exit_code = 1


class UsageError(EtlError):
    """A bad option or configuration value; the run did not start."""

    exit_code = 2


class SettingError(UsageError):
    """One setting has a value it cannot take.

    The message names the setting by its field name (as a notebook passes it); a front end
    names it as its user wrote it (`named`): the CLI by its option, the config file by its key.
    ``origin`` says where the value came from: ``option``, ``env``, ``file`` or ``argument``
    (a library call). ``also`` is a second setting the message ends with ("... together with
    verbose"). Messages never hold a secret's value.
    """

    def __init__(
        self,
        name: str,
        problem: str,
        *,
        also: str | None = None,
        origin: str = "argument",
        file: object = None,
    ) -> None:
        self.name, self.problem, self.also, self.origin, self.file = (
            name,
            problem,
            also,
            origin,
            file,
        )
        super().__init__(self.named(lambda setting: setting))

    def named(self, label: Callable[[str], str]) -> str:
        """The message, each setting called by ``label(name)``."""
        tail = f" {label(self.also)}" if self.also else ""
        return f"{label(self.name)} {self.problem}{tail}"

    def where(self, origin: str, file: object = None) -> SettingError:
        """The same error, saying where the value came from."""
        return SettingError(self.name, self.problem, also=self.also, origin=origin, file=file)


class DatabaseError(EtlError):
    """The database could not be opened, read or written."""

    exit_code = 1


class UnusableDatabaseError(DatabaseError):
    """What the database URL names is no database the run can open: a file that is not a
    SQLite database or is damaged, a PostgreSQL database or role that does not exist, a
    password refused. A configuration error, found before anything is written: nothing to
    wait for (a busy or unreachable database is a `DatabaseError`, exit 1)."""

    exit_code = 2


class SchemaError(DatabaseError):
    """The database is not cowrieprocessor's (none of its tables, and no --create), or its
    tables are not in a shape the refresh can write safely."""

    exit_code = 2


class ReaderStoppedError(DatabaseError):
    """The process that reads a SQLite file for DuckDB ended during a query (never retried)."""

    exit_code = 1


class DatabaseBusyError(DatabaseError):
    """A write waited ``lock_timeout`` for another writer's lock or a lost connection."""

    exit_code = 1


class RunLockedError(DatabaseError):
    """Another refresh holds the database's run lock; this run did nothing."""

    exit_code = 1


class MaxMindError(UsageError):
    """A MaxMind database named by the user is missing or unreadable."""


class MaxMindFileError(SettingError, MaxMindError):
    """A MaxMind file named by a setting (maxmind_asn, maxmind_city) cannot be used."""


class ServiceError(EtlError):
    """A remote service cannot be used for the rest of this run.

    ``reason``: a short label for the summary and the metrics (each subclass has its own
    default); ``run_exit_code``: the exit code of a run this stop leaves otherwise complete.
    """

    reason = "stopped"
    run_exit_code = 0

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ServiceUnavailableError(ServiceError):
    """Requests or sessions failed too many times in a row: ``unreachable`` (connections
    refused, names not found, connects timing out) or ``stalled`` (connected, no answer)."""

    reason = "unreachable"
    run_exit_code = 3


class UnauthorizedError(ServiceError):
    """The service rejected our credentials."""

    reason = "key_refused"
    run_exit_code = 3


class ThrottledError(ServiceError):
    """The service asked us to wait longer than the run may (a Retry-After too long)."""

    reason = "throttled"


class QuotaExhaustedError(ServiceError):
    """The service's daily limit (``daily_limit``), or this run's budget (``budget``), is
    spent: normal operation."""

    reason = "daily_limit"


class TransportError(Exception):
    """A request got no HTTP answer; clients retry it. ``failure`` says what happened in a
    few words ("connection refused", "no answer within 15 s"); ``stalled``: the connection
    was made, but no answer came."""

    def __init__(self, message: str, failure: str = "connection failed", stalled: bool = False):
        super().__init__(message)
        self.failure, self.stalled = failure, stalled
