"""DDL of the three enrichment tiers, exactly as cowrieprocessor (schema_version 17) creates them.

Only used to create tables that are absent. Column names, types, defaults, keys and indexes
follow the reference dumps of datagen24/cowrieprocessor at schema_version 17: the SQLite
tables come from its ORM, the PostgreSQL ones from its v16/v17 migrations (generated columns,
CHECKs, partial and BRIN indexes, foreign keys).
"""

from __future__ import annotations

from etl.core.vocabulary import SOURCES, STATUSES

SCHEMA_VERSION = "17"
TIER_TABLES = ("asn_inventory", "ip_inventory", "session_summaries")

SQLITE_SCHEMA_STATE = """
CREATE TABLE schema_state (
\t"key" VARCHAR(128) NOT NULL,
\tvalue VARCHAR(256) NOT NULL,
\tCONSTRAINT pk_schema_state PRIMARY KEY ("key")
);
"""

SQLITE_TABLES = {
    "asn_inventory": """
CREATE TABLE asn_inventory (
\tasn_number INTEGER NOT NULL,
\torganization_name TEXT,
\torganization_country VARCHAR(2),
\trir_registry VARCHAR(10),
\tasn_type TEXT,
\tis_known_hosting BOOLEAN DEFAULT 0 NOT NULL,
\tis_known_vpn BOOLEAN DEFAULT 0 NOT NULL,
\tfirst_seen DATETIME NOT NULL,
\tlast_seen DATETIME NOT NULL,
\tunique_ip_count INTEGER DEFAULT '0' NOT NULL,
\ttotal_session_count INTEGER DEFAULT '0' NOT NULL,
\tenrichment JSON DEFAULT '{}' NOT NULL,
\tenrichment_updated_at DATETIME,
\tcreated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
\tupdated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
\tCONSTRAINT pk_asn_inventory PRIMARY KEY (asn_number)
);
CREATE INDEX ix_asn_inventory_first_seen ON asn_inventory (first_seen);
CREATE INDEX ix_asn_inventory_session_count ON asn_inventory (total_session_count);
CREATE INDEX ix_asn_inventory_last_seen ON asn_inventory (last_seen);
CREATE INDEX ix_asn_inventory_asn_type ON asn_inventory (asn_type);
CREATE INDEX ix_asn_inventory_org_name ON asn_inventory (organization_name);
""",
    "ip_inventory": """
CREATE TABLE ip_inventory (
\tip_address VARCHAR(45) NOT NULL,
\tcurrent_asn INTEGER,
\tasn_last_verified DATETIME,
\tfirst_seen DATETIME NOT NULL,
\tlast_seen DATETIME NOT NULL,
\tsession_count INTEGER DEFAULT '1' NOT NULL,
\tenrichment JSON DEFAULT '{}' NOT NULL,
\tenrichment_updated_at DATETIME,
\tenrichment_version VARCHAR(10) DEFAULT '2.2' NOT NULL,
\tcreated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
\tupdated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
\tCONSTRAINT pk_ip_inventory PRIMARY KEY (ip_address),
\tCONSTRAINT fk_ip_inventory_current_asn_asn_inventory
\t\tFOREIGN KEY(current_asn) REFERENCES asn_inventory (asn_number)
);
CREATE INDEX ix_ip_inventory_first_seen ON ip_inventory (first_seen);
CREATE INDEX ix_ip_inventory_enrichment_updated ON ip_inventory (enrichment_updated_at);
CREATE INDEX ix_ip_inventory_current_asn ON ip_inventory (current_asn);
CREATE INDEX ix_ip_inventory_last_seen ON ip_inventory (last_seen);
CREATE INDEX ix_ip_inventory_session_count ON ip_inventory (session_count);
""",
    "session_summaries": """
CREATE TABLE session_summaries (
\tsession_id VARCHAR(64) NOT NULL,
\tsource_ip VARCHAR(45),
\tfirst_event_at DATETIME,
\tlast_event_at DATETIME,
\tevent_count INTEGER DEFAULT '0' NOT NULL,
\tcommand_count INTEGER DEFAULT '0' NOT NULL,
\tfile_downloads INTEGER DEFAULT '0' NOT NULL,
\tlogin_attempts INTEGER DEFAULT '0' NOT NULL,
\tssh_key_injections INTEGER DEFAULT '0' NOT NULL,
\tunique_ssh_keys INTEGER DEFAULT '0' NOT NULL,
\tvt_flagged BOOLEAN DEFAULT 0 NOT NULL,
\tdshield_flagged BOOLEAN DEFAULT 0 NOT NULL,
\trisk_score INTEGER,
\tmatcher VARCHAR(32),
\tsource_files JSON,
\tssh_key_fingerprint VARCHAR(128),
\tpassword_hash VARCHAR(64),
\tcommand_signature TEXT,
\tsnapshot_asn INTEGER,
\tsnapshot_country VARCHAR(2),
\tsnapshot_ip_type TEXT,
\tenrichment JSON,
\tenrichment_at DATETIME,
\tcreated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
\tupdated_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
\tCONSTRAINT pk_session_summaries PRIMARY KEY (session_id),
\tCONSTRAINT fk_session_summaries_source_ip_ip_inventory
\t\tFOREIGN KEY(source_ip) REFERENCES ip_inventory (ip_address)
);
CREATE INDEX ix_session_summaries_flags ON session_summaries (vt_flagged, dshield_flagged);
CREATE INDEX ix_session_summaries_snapshot_ip_type ON session_summaries (snapshot_ip_type);
CREATE INDEX ix_session_summaries_ssh_keys ON session_summaries (ssh_key_injections);
CREATE INDEX ix_session_summaries_last_event ON session_summaries (last_event_at);
CREATE INDEX ix_session_summaries_ssh_key_fp ON session_summaries (ssh_key_fingerprint);
CREATE INDEX ix_session_summaries_snapshot_asn ON session_summaries (snapshot_asn);
CREATE INDEX ix_session_summaries_password_hash ON session_summaries (password_hash);
CREATE INDEX ix_session_summaries_first_event ON session_summaries (first_event_at);
CREATE INDEX ix_session_summaries_snapshot_country ON session_summaries (snapshot_country);
CREATE INDEX ix_session_summaries_command_sig ON session_summaries (command_signature);
CREATE INDEX ix_session_summaries_source_ip ON session_summaries (source_ip);
CREATE INDEX idx_session_ssh_key_fp ON session_summaries(ssh_key_fingerprint);
CREATE INDEX idx_session_password_hash ON session_summaries(password_hash);
CREATE INDEX idx_session_command_sig ON session_summaries(command_signature);
""",
}

POSTGRES_SCHEMA_STATE = """
CREATE TABLE public.schema_state (
    key character varying(128) NOT NULL,
    value character varying(256) NOT NULL,
    CONSTRAINT pk_schema_state PRIMARY KEY (key)
);
"""

POSTGRES_TABLES = {
    "asn_inventory": """
CREATE TABLE public.asn_inventory (
    asn_number integer NOT NULL,
    organization_name text,
    organization_country character varying(2),
    rir_registry character varying(10),
    asn_type text,
    is_known_hosting boolean DEFAULT false NOT NULL,
    is_known_vpn boolean DEFAULT false NOT NULL,
    first_seen timestamp with time zone NOT NULL,
    last_seen timestamp with time zone NOT NULL,
    unique_ip_count integer DEFAULT 0 NOT NULL,
    total_session_count integer DEFAULT 0 NOT NULL,
    enrichment json DEFAULT '{}'::json NOT NULL,
    enrichment_updated_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE SEQUENCE public.asn_inventory_asn_number_seq
    AS integer START WITH 1 INCREMENT BY 1 NO MINVALUE NO MAXVALUE CACHE 1;
ALTER SEQUENCE public.asn_inventory_asn_number_seq OWNED BY public.asn_inventory.asn_number;
ALTER TABLE ONLY public.asn_inventory
    ALTER COLUMN asn_number SET DEFAULT nextval('public.asn_inventory_asn_number_seq'::regclass);
ALTER TABLE ONLY public.asn_inventory
    ADD CONSTRAINT pk_asn_inventory PRIMARY KEY (asn_number);
CREATE INDEX idx_asn_org_name ON public.asn_inventory USING btree (organization_name);
CREATE INDEX idx_asn_session_count ON public.asn_inventory USING btree (total_session_count DESC);
CREATE INDEX idx_asn_type ON public.asn_inventory USING btree (asn_type);
CREATE INDEX ix_asn_inventory_asn_type ON public.asn_inventory USING btree (asn_type);
CREATE INDEX ix_asn_inventory_first_seen ON public.asn_inventory USING btree (first_seen);
CREATE INDEX ix_asn_inventory_last_seen ON public.asn_inventory USING btree (last_seen);
CREATE INDEX ix_asn_inventory_org_name ON public.asn_inventory USING btree (organization_name);
CREATE INDEX ix_asn_inventory_session_count
    ON public.asn_inventory USING btree (total_session_count);
""",
    "ip_inventory": """
CREATE TABLE public.ip_inventory (
    ip_address character varying(45) NOT NULL,
    current_asn integer,
    asn_last_verified timestamp with time zone,
    first_seen timestamp with time zone NOT NULL,
    last_seen timestamp with time zone NOT NULL,
    session_count integer DEFAULT 1,
    enrichment jsonb DEFAULT '{}'::jsonb NOT NULL,
    enrichment_updated_at timestamp with time zone,
    enrichment_version character varying(20) DEFAULT '2.2'::character varying,
    geo_country character varying(2) GENERATED ALWAYS AS (upper(COALESCE(
        ((enrichment -> 'maxmind'::text) ->> 'country'::text),
        ((enrichment -> 'cymru'::text) ->> 'country'::text),
        (((enrichment -> 'dshield'::text) -> 'ip'::text) ->> 'ascountry'::text),
        'XX'::text))) STORED,
    ip_types text[] DEFAULT ARRAY[]::text[],
    is_scanner boolean GENERATED ALWAYS AS (COALESCE(
        (((enrichment -> 'greynoise'::text) ->> 'noise'::text))::boolean, false)) STORED,
    is_bogon boolean GENERATED ALWAYS AS (COALESCE(
        (((enrichment -> 'validation'::text) ->> 'is_bogon'::text))::boolean, false)) STORED,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT ip_inventory_session_count_check CHECK ((session_count >= 0))
);
ALTER TABLE ONLY public.ip_inventory
    ADD CONSTRAINT ip_inventory_pkey PRIMARY KEY (ip_address);
CREATE INDEX idx_ip_current_asn ON public.ip_inventory USING btree (current_asn);
CREATE INDEX idx_ip_enrichment_updated ON public.ip_inventory USING btree (enrichment_updated_at);
CREATE INDEX idx_ip_geo_country ON public.ip_inventory USING btree (geo_country);
CREATE INDEX idx_ip_session_count ON public.ip_inventory USING btree (session_count DESC);
CREATE INDEX idx_ip_staleness_active ON public.ip_inventory
    USING btree (enrichment_updated_at, last_seen) WHERE (enrichment_updated_at IS NOT NULL);
ALTER TABLE ONLY public.ip_inventory
    ADD CONSTRAINT fk_ip_current_asn FOREIGN KEY (current_asn)
    REFERENCES public.asn_inventory(asn_number);
""",
    "session_summaries": """
CREATE TABLE public.session_summaries (
    session_id character varying(64) NOT NULL,
    source_ip character varying(45),
    first_event_at timestamp with time zone,
    last_event_at timestamp with time zone,
    event_count integer DEFAULT 0 NOT NULL,
    command_count integer DEFAULT 0 NOT NULL,
    file_downloads integer DEFAULT 0 NOT NULL,
    login_attempts integer DEFAULT 0 NOT NULL,
    ssh_key_injections integer DEFAULT 0 NOT NULL,
    unique_ssh_keys integer DEFAULT 0 NOT NULL,
    vt_flagged boolean DEFAULT false NOT NULL,
    dshield_flagged boolean DEFAULT false NOT NULL,
    risk_score integer,
    matcher character varying(32),
    source_files json,
    ssh_key_fingerprint character varying(128),
    password_hash character varying(64),
    command_signature text,
    snapshot_asn integer,
    snapshot_country character varying(2),
    snapshot_ip_type text,
    enrichment json,
    enrichment_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT snapshot_country_iso CHECK (((snapshot_country IS NULL)
        OR ((snapshot_country)::text ~ '^[A-Z]{2}$'::text)))
);
ALTER TABLE ONLY public.session_summaries
    ADD CONSTRAINT pk_session_summaries PRIMARY KEY (session_id);
CREATE INDEX idx_session_command_sig ON public.session_summaries USING btree (command_signature);
CREATE INDEX idx_session_first_event_brin ON public.session_summaries USING brin (first_event_at);
CREATE INDEX idx_session_last_event_brin ON public.session_summaries USING brin (last_event_at);
CREATE INDEX idx_session_password_hash ON public.session_summaries USING btree (password_hash);
CREATE INDEX idx_session_snapshot_asn ON public.session_summaries USING btree (snapshot_asn);
CREATE INDEX idx_session_snapshot_country
    ON public.session_summaries USING btree (snapshot_country);
CREATE INDEX idx_session_source_ip ON public.session_summaries USING btree (source_ip);
CREATE INDEX idx_session_ssh_key_fp ON public.session_summaries USING btree (ssh_key_fingerprint);
CREATE INDEX ix_session_summaries_command_sig
    ON public.session_summaries USING btree (command_signature);
CREATE INDEX ix_session_summaries_first_event
    ON public.session_summaries USING btree (first_event_at);
CREATE INDEX ix_session_summaries_flags
    ON public.session_summaries USING btree (vt_flagged, dshield_flagged);
CREATE INDEX ix_session_summaries_last_event
    ON public.session_summaries USING btree (last_event_at);
CREATE INDEX ix_session_summaries_password_hash
    ON public.session_summaries USING btree (password_hash);
CREATE INDEX ix_session_summaries_snapshot_asn
    ON public.session_summaries USING btree (snapshot_asn);
CREATE INDEX ix_session_summaries_snapshot_country
    ON public.session_summaries USING btree (snapshot_country);
CREATE INDEX ix_session_summaries_snapshot_ip_type
    ON public.session_summaries USING btree (snapshot_ip_type);
CREATE INDEX ix_session_summaries_source_ip ON public.session_summaries USING btree (source_ip);
CREATE INDEX ix_session_summaries_ssh_key_fp
    ON public.session_summaries USING btree (ssh_key_fingerprint);
CREATE INDEX ix_session_summaries_ssh_keys
    ON public.session_summaries USING btree (ssh_key_injections);
ALTER TABLE ONLY public.session_summaries
    ADD CONSTRAINT fk_session_source_ip FOREIGN KEY (source_ip)
    REFERENCES public.ip_inventory(ip_address);
""",
}

# -- our own table: the run log ------------------------------------------------------------------
# One row per refresh that opened the database for writing (README "Run log"). Not one of
# cowrieprocessor's tables: it is only ever added (created when absent), and cowrieprocessor,
# which checks schema_state alone, still finds its schema current.
RUN_LOG_TABLE = "etl_run_log"
RUN_LOG_COUNTS = ("queried", *STATUSES)
# column -> portable type (`_TYPES`): "count" is NOT NULL DEFAULT 0, "number" may be NULL
RUN_LOG_COLUMNS: dict[str, str] = {
    "run_id": "id",
    "started_at": "time NOT NULL",
    "ended_at": "time",
    "outcome": "word NOT NULL",
    "exit_code": "number",
    "error": "text",
    "selected": "count",
    "new_ips": "count",
    "bogons": "count",
    **{f"{s}_{c}": "count" for s in SOURCES for c in RUN_LOG_COUNTS},
    "greynoise_requests": "count",
    "greynoise_searches": "number",
    "greynoise_searches_by_day": "text",
    "greynoise_search_cap": "number",
    "greynoise_daily_budget": "number",
    "ip_rows_written": "count",
    "asn_rows_written": "count",
    "cymru_as_lookups_failed": "count",
    "stopped": "text",
    "etl_version": "text",
}
_TYPES = {
    "sqlite": {
        "id": "INTEGER NOT NULL",
        "count": "INTEGER DEFAULT 0 NOT NULL",
        "number": "INTEGER",
        "time": "DATETIME",
        "word": "VARCHAR(16)",
        "text": "TEXT",
    },
    "postgres": {
        "id": "bigint NOT NULL",
        "count": "bigint DEFAULT 0 NOT NULL",
        "number": "bigint",
        "time": "timestamp with time zone",
        "word": "character varying(16)",
        "text": "text",
    },
}


def run_log_ddl(dialect: str) -> str:
    """The CREATE TABLE script of the run log in ``dialect`` (``sqlite`` or ``postgres``)."""
    types = _TYPES[dialect]
    lines = []
    for column, kind in RUN_LOG_COLUMNS.items():
        base, _, rest = kind.partition(" ")
        lines.append(f"\t{column} {types[base]}{' ' + rest if rest else ''}")
    table = RUN_LOG_TABLE if dialect == "sqlite" else f"public.{RUN_LOG_TABLE}"
    key = f"\tCONSTRAINT pk_{RUN_LOG_TABLE} PRIMARY KEY (run_id)"
    return f"CREATE TABLE {table} (\n" + ",\n".join([*lines, key]) + "\n);\n"


def run_log_added_columns(dialect: str, present: set[str]) -> list[str]:
    """ALTER TABLE statements adding the run log columns a table made by an earlier version
    lacks (``present``: the columns it has); counts default to 0 in the old rows."""
    table = RUN_LOG_TABLE if dialect == "sqlite" else f"public.{RUN_LOG_TABLE}"
    statements = []
    for column, kind in RUN_LOG_COLUMNS.items():
        if column not in present:
            base, _, rest = kind.partition(" ")
            typed = f"{_TYPES[dialect][base]}{' ' + rest if rest else ''}"
            statements.append(f"ALTER TABLE {table} ADD COLUMN {column} {typed}")
    return statements


# Ours: sessions whose raw events name no source address, with the last event id read
# (`etl.db.sessions`): read again only once they have newer events.
SESSION_CHECKS_TABLE = "etl_session_checks"


def session_checks_ddl(dialect: str) -> str:
    """The CREATE TABLE statement of `SESSION_CHECKS_TABLE` in ``dialect``."""
    columns = "session_id VARCHAR(64) NOT NULL, last_event_id BIGINT, checked_at {stamp}"
    return _our_table_ddl(dialect, SESSION_CHECKS_TABLE, columns, "session_id")


def _our_table_ddl(
    dialect: str, table: str, columns: str, key: str, if_not_exists: bool = False
) -> str:
    """The CREATE TABLE statement of one of our own small tables in ``dialect``: ``columns``
    with ``{stamp}`` for the dialect's timestamp type, and a primary key on ``key``."""
    name = table if dialect == "sqlite" else f"public.{table}"
    stamp = "DATETIME" if dialect == "sqlite" else "timestamp with time zone"
    create = "CREATE TABLE IF NOT EXISTS" if if_not_exists else "CREATE TABLE"
    return (
        f"{create} {name} ({columns.format(stamp=stamp)}, "
        f"CONSTRAINT pk_{table} PRIMARY KEY ({key}))"
    )


# Ours: which database this is (`etl.db.identity`): a row ``('database_id', <uuid4>)`` made
# the first time a real run opens the database (answers a stopped run keeps carry that id);
# on PostgreSQL also ``('run', 'pid N running')`` while a run has not finished (`etl.db.lock`).
IDENTITY_TABLE = "etl_identity"


def identity_ddl(dialect: str) -> str:
    """The CREATE TABLE statement of `IDENTITY_TABLE` in ``dialect`` (if not there yet)."""
    columns = "name VARCHAR(32) NOT NULL, value VARCHAR(64) NOT NULL, created_at {stamp}"
    return _our_table_ddl(dialect, IDENTITY_TABLE, columns, "name", if_not_exists=True)
