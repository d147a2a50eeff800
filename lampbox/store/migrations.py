"""Ordered, idempotent schema migrations (the simonw/llm pattern).

Each migration is a function registered in order; the names of applied migrations are kept
in `_lampbox_migrations`, so opening a store applies exactly the ones it lacks. Never edit a
migration that has shipped: add a new one.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

Migration = Callable[[duckdb.DuckDBPyConnection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(function: Migration) -> Migration:
    MIGRATIONS.append((function.__name__, function))
    return function


def pending_migrations(connection: duckdb.DuckDBPyConnection) -> list[str]:
    """The migrations this store lacks (without changing it: works on a read-only store)."""
    try:
        applied = {row[0] for row in connection.execute("SELECT name FROM _lampbox_migrations").fetchall()}
    except duckdb.CatalogException:
        applied = set()
    return [name for name, _ in MIGRATIONS if name not in applied]


def migrate(connection: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply the missing migrations in order, each in its own transaction; return their names."""
    connection.execute(
        "CREATE TABLE IF NOT EXISTS _lampbox_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)"
    )
    applied = {row[0] for row in connection.execute("SELECT name FROM _lampbox_migrations").fetchall()}
    done: list[str] = []
    for name, function in MIGRATIONS:
        if name in applied:
            continue
        connection.execute("BEGIN TRANSACTION")
        try:
            function(connection)
            connection.execute("INSERT INTO _lampbox_migrations (name) VALUES (?)", [name])
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        done.append(name)
    return done


@migration
def m001_lamp_data(connection: duckdb.DuckDBPyConnection) -> None:
    """Tasks, imports, users, questions (with golds), profile items stored once, and their order."""
    connection.execute(
        """
        CREATE TABLE tasks (
            name VARCHAR PRIMARY KEY,
            spec VARCHAR NOT NULL,          -- TaskSpec as JSON
            custom BOOLEAN NOT NULL,
            source VARCHAR,                 -- where a custom task was declared
            updated_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    connection.execute(
        """
        CREATE TABLE imports (
            task VARCHAR NOT NULL,
            scheme VARCHAR NOT NULL,        -- user | time | demo
            split VARCHAR NOT NULL,         -- train | dev | test
            questions_path VARCHAR,
            questions_sha256 VARCHAR,
            outputs_path VARCHAR,
            outputs_sha256 VARCHAR,
            n_questions INTEGER,
            n_golds INTEGER,
            imported_at TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (task, scheme, split)
        )
        """
    )
    connection.execute(
        """
        CREATE TABLE users (
            task VARCHAR NOT NULL,
            scheme VARCHAR NOT NULL,
            user_id VARCHAR NOT NULL,
            PRIMARY KEY (task, scheme, user_id)
        )
        """
    )
    connection.execute(
        """
        CREATE TABLE questions (
            task VARCHAR NOT NULL,
            scheme VARCHAR NOT NULL,
            split VARCHAR NOT NULL,
            question_id VARCHAR NOT NULL,
            user_id VARCHAR NOT NULL,
            input VARCHAR NOT NULL,
            gold VARCHAR,                   -- NULL where the gold is not known (test)
            position INTEGER NOT NULL,      -- order in the imported file
            profile_size INTEGER NOT NULL
        )
        """
    )
    # Profile items are content-addressed: one row per (user, item id, content), shared by
    # every question whose profile holds it. No PRIMARY KEY on the big tables: DuckDB's ART
    # indexes slow bulk loads; the importer keeps them unique with anti-joins.
    connection.execute(
        """
        CREATE TABLE profile_items (
            task VARCHAR NOT NULL,
            item_key VARCHAR NOT NULL,
            user_id VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL,
            date VARCHAR,
            fields VARCHAR NOT NULL         -- the item's other fields as a JSON object
        )
        """
    )
    connection.execute(
        """
        CREATE TABLE question_items (
            task VARCHAR NOT NULL,
            scheme VARCHAR NOT NULL,
            question_id VARCHAR NOT NULL,
            position INTEGER NOT NULL,      -- order in the question's profile
            item_key VARCHAR NOT NULL
        )
        """
    )


@migration
def m002_retrieval(connection: duckdb.DuckDBPyConnection) -> None:
    """Retrievers by key, stored rankings per (retriever, question), embeddings per model."""
    connection.execute(
        """
        CREATE TABLE retrievers (
            retriever_key VARCHAR PRIMARY KEY,  -- name + ranking-relevant options
            name VARCHAR NOT NULL,
            options VARCHAR NOT NULL,           -- all options as JSON
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    # No PRIMARY KEY on the big tables (bulk loads); retrieval_store keeps them unique.
    connection.execute(
        """
        CREATE TABLE rankings (
            retriever_key VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            scheme VARCHAR NOT NULL,
            question_id VARCHAR NOT NULL,
            fingerprint VARCHAR NOT NULL,       -- query + profile it was computed for
            item_keys VARCHAR[] NOT NULL,       -- best first
            item_ids VARCHAR[] NOT NULL,
            scores DOUBLE[] NOT NULL,
            context_limit INTEGER,              -- 0 for `none`: nothing goes into a prompt
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    connection.execute(
        """
        CREATE TABLE embeddings (
            model_key VARCHAR NOT NULL,         -- model identity (name or path, pooling, length)
            text_hash VARCHAR NOT NULL,         -- blake2b of the exact text encoded
            dim INTEGER NOT NULL,
            vector FLOAT[] NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )


@migration
def m003_runs(connection: duckdb.DuckDBPyConnection) -> None:
    """Runs, their predictions and per-user scores, benches, and the generation cache."""
    statements = (
        """
        CREATE TABLE runs (
            run_key VARCHAR PRIMARY KEY,    -- hash of the frozen RunSpec
            label VARCHAR NOT NULL,         -- e.g. "bm25 k=4 llamacpp:smollm2-135m-instruct"
            task VARCHAR NOT NULL,
            scheme VARCHAR NOT NULL,
            split VARCHAR NOT NULL,
            spec VARCHAR NOT NULL,          -- the RunSpec as JSON
            status VARCHAR NOT NULL,        -- running | finished | failed | cancelled
            n_questions INTEGER,
            metrics VARCHAR,                -- official metrics as JSON
            error VARCHAR,
            predictions_path VARCHAR,       -- the official-format predictions file written
            created_at TIMESTAMP DEFAULT current_timestamp,
            finished_at TIMESTAMP
        )
        """,
        """
        CREATE TABLE predictions (
            run_key VARCHAR NOT NULL,
            question_id VARCHAR NOT NULL,
            user_id VARCHAR NOT NULL,
            position INTEGER NOT NULL,
            prompt VARCHAR,                 -- NULL for model-free baselines
            item_keys VARCHAR[],            -- retrieved profile items that went in, in order
            item_ids VARCHAR[],
            kept VARCHAR,                   -- per item how much survived the token budget (JSON)
            prompt_tokens INTEGER,
            raw_output VARCHAR NOT NULL,    -- what the model wrote
            output VARCHAR NOT NULL,        -- after the run's recorded post-processing (stripped)
            gold VARCHAR,
            scores VARCHAR,                 -- per-question metric values (JSON)
            main_score DOUBLE
        )
        """,
        """
        CREATE TABLE user_scores (
            run_key VARCHAR NOT NULL,
            user_id VARCHAR NOT NULL,
            n_questions INTEGER NOT NULL,
            profile_size DOUBLE,            -- mean profile size of the user's questions
            metrics VARCHAR NOT NULL,       -- JSON
            main_score DOUBLE
        )
        """,
        """
        CREATE TABLE generation_cache (
            cache_key VARCHAR PRIMARY KEY,  -- hash of (model identity, backend, params, prompt)
            model VARCHAR,
            backend VARCHAR,
            output VARCHAR NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """,
        """
        CREATE TABLE benches (
            bench_key VARCHAR PRIMARY KEY,
            task VARCHAR NOT NULL,
            scheme VARCHAR NOT NULL,
            split VARCHAR NOT NULL,
            spec VARCHAR NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """,
        """
        CREATE TABLE bench_runs (
            bench_key VARCHAR NOT NULL,
            run_key VARCHAR NOT NULL,
            position INTEGER NOT NULL,
            role VARCHAR NOT NULL           -- baseline | retrieval | retrieval-only
        )
        """,
    )
    for statement in statements:
        connection.execute(statement)


@migration
def m004_artifacts(connection: duckdb.DuckDBPyConnection) -> None:
    """Trained models (adapters, full checkpoints): what they are, how they were made, their
    dev metrics per evaluation, where they are and their content hash."""
    connection.execute(
        """
        CREATE TABLE artifacts (
            name VARCHAR PRIMARY KEY,       -- usable wherever a model name is
            kind VARCHAR NOT NULL,          -- lora | full
            method VARCHAR NOT NULL,        -- ipa | fid | ...
            task VARCHAR NOT NULL,
            base_model VARCHAR NOT NULL,
            base_fingerprint VARCHAR NOT NULL,
            spec VARCHAR NOT NULL,          -- the training spec as JSON
            history VARCHAR NOT NULL,       -- per logged step: loss, dev metrics (JSON list)
            metrics VARCHAR,                -- the kept checkpoint's dev metrics (JSON)
            path VARCHAR NOT NULL,
            content_hash VARCHAR NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )


@migration
def m005_task_hashes(connection: duckdb.DuckDBPyConnection) -> None:
    """Each run records the fingerprint of the task definition it was made under (NULL for runs
    made before: not recorded)."""
    connection.execute("ALTER TABLE runs ADD COLUMN task_hash VARCHAR")


@migration
def m006_run_progress(connection: duckdb.DuckDBPyConnection) -> None:
    """A running run's phase and questions done, written as it goes, so that another process (the
    TUI beside a bench) can show its progress."""
    connection.execute("ALTER TABLE runs ADD COLUMN progress_phase VARCHAR")
    connection.execute("ALTER TABLE runs ADD COLUMN progress_done INTEGER")


@migration
def m007_selection_feedback(connection: duckdb.DuckDBPyConnection) -> None:
    """ROPG feedback (each candidate item's utility for a question) and RSPG selector
    probabilities (each candidate configuration's probability for a question), keyed like
    rankings: by what made them (feedback / selector key) and the question."""
    connection.execute(
        """
        CREATE TABLE ropg_feedback (
            feedback_key VARCHAR NOT NULL,  -- what made the utilities: model fingerprint, template, metric
            label VARCHAR NOT NULL,         -- a short name for the screens
            task VARCHAR NOT NULL,
            scheme VARCHAR NOT NULL,
            question_id VARCHAR NOT NULL,
            item_key VARCHAR NOT NULL,      -- the stored profile item (profile_items.item_key)
            item_id VARCHAR NOT NULL,
            utility DOUBLE NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    connection.execute(
        """
        CREATE TABLE rspg_probabilities (
            selector_key VARCHAR NOT NULL,  -- the trained selector (its fingerprint)
            label VARCHAR NOT NULL,         -- e.g. RSPG-Post
            task VARCHAR NOT NULL,
            scheme VARCHAR NOT NULL,
            question_id VARCHAR NOT NULL,
            retriever VARCHAR NOT NULL,     -- the candidate configuration: none at k 0 for no
            k INTEGER NOT NULL,             -- personalization
            method VARCHAR NOT NULL,
            backend VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            probability DOUBLE NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )


@migration
def m008_run_kinds(connection: duckdb.DuckDBPyConnection) -> None:
    """What a run is: 'run' (a benchmark run, every run before) or 'whatif' (a what-if edit of
    one question saved from the TUI: never benchmark data)."""
    connection.execute("ALTER TABLE runs ADD COLUMN kind VARCHAR DEFAULT 'run'")
    connection.execute("UPDATE runs SET kind = 'run' WHERE kind IS NULL")


@migration
def m009_bench_status(connection: duckdb.DuckDBPyConnection) -> None:
    """Whether a bench is running, finished, failed or cancelled (and why it stopped), so a
    bench that stopped on an error is not shown running forever; NULL for benches made before."""
    connection.execute("ALTER TABLE benches ADD COLUMN status VARCHAR")
    connection.execute("ALTER TABLE benches ADD COLUMN error VARCHAR")


@migration
def m010_artifact_kinds(connection: duckdb.DuckDBPyConnection) -> None:
    """Artifacts of every kind: an OPPU user's adapter keeps its user and, like an OPPU set, the
    task adapter it stands on (`models rm` of that adapter names them); a FiD model is kind
    'fid' (it was registered 'full' with method fid). Filled from each row's spec, which holds
    both for rows made before."""
    import json

    connection.execute("ALTER TABLE artifacts ADD COLUMN user_id VARCHAR")
    connection.execute("ALTER TABLE artifacts ADD COLUMN stands_on VARCHAR")
    connection.execute("UPDATE artifacts SET kind = 'fid' WHERE kind = 'full' AND method = 'fid'")
    rows = connection.execute("SELECT name, kind, spec FROM artifacts WHERE kind IN ('user-adapter', 'oppu')").fetchall()
    for name, kind, spec_json in rows:
        spec = json.loads(spec_json)
        user = spec.get("user") if kind == "user-adapter" else None
        task_adapter = spec.get("task_adapter") or (f"{name}.task" if kind == "oppu" else None)
        connection.execute("UPDATE artifacts SET user_id = ?, stands_on = ? WHERE name = ?", [user, task_adapter, name])
