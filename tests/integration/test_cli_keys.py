"""`bedrock-spend keys ...` in-process against a real DynamoDB API (moto server over HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from bedrock_spend.aws.key_store import KeyStore
from bedrock_spend.aws.ledger import Ledger
from bedrock_spend.domain.keys import KeyRecord, decide, hash_key, utcnow
from bedrock_spend.domain.prices import Cost
from bedrock_spend.domain.usage import Usage
from bedrock_spend.domain.usage_record import Caller, UsageRecord
from bedrock_spend_cli import config
from bedrock_spend_cli.main import main
from tests.conftest import KEY_TABLE, USAGE_TABLE
from tests.helpers import CliResult, CliRun, cli_runner

Result = CliResult
Run = CliRun


@pytest.fixture
def endpoint(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv(config.KEYS_TABLE_ENV, raising=False)
    monkeypatch.delenv(config.USAGE_TABLE_ENV, raising=False)
    return aws_env["AWS_ENDPOINT_URL_DYNAMODB"]


@pytest.fixture
def run_bare(endpoint: str, capsys: pytest.CaptureFixture[str]) -> Run:
    """The CLI with only --endpoint-url: tables come from wherever the test says."""

    return cli_runner(capsys, "--endpoint-url", endpoint)


@pytest.fixture
def run(run_bare: Run) -> Run:
    def run_with_tables(*argv: str) -> Result:
        return run_bare("--keys-table", KEY_TABLE, "--usage-table", USAGE_TABLE, *argv)

    return run_with_tables


@pytest.fixture
def store(endpoint: str) -> KeyStore:
    return KeyStore(
        KEY_TABLE, client=boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    )


def create(run: Run, *options: str) -> dict[str, str]:
    """Create a key; its id, principal and the secret key itself."""
    result = run("keys", "create", "--format", "json", *options)
    assert result.code == 0, result.err
    return dict(result.json())


def record_of(store: KeyStore, key_id: str) -> KeyRecord:
    record = store.get_by_id(key_id)
    assert record is not None
    return record


# --- create ---


def test_create_prints_the_key_once_with_a_warning(run: Run, store: KeyStore) -> None:
    result = run("keys", "create", "--username", "alice")
    assert result.code == 0
    key = next(word for word in result.out.split() if word.startswith("bsk_"))
    assert result.out.count(key) == 1
    assert "only time it is shown" in result.out
    assert "User::alice" in result.out
    record = next(store.scan())
    assert record.key_id in result.out
    assert record.key_hash == hash_key(key)
    assert record.key_hash not in result.out + result.err


def test_create_stores_only_the_hash(run: Run, dynamodb: Any) -> None:
    created = create(run, "--username", "alice", "--description", "laptop")
    items = dynamodb.scan(TableName=KEY_TABLE)["Items"]
    assert len(items) == 1
    assert items[0]["KeyHash"]["S"] == hash_key(created["key"])
    assert created["key"] not in json.dumps(items)


def test_create_json_gives_key_id_principal_and_key(run: Run, store: KeyStore) -> None:
    created = create(run, "--username", "alice")
    assert created["principal"] == "User::alice"
    assert created["key"].startswith("bsk_")
    assert record_of(store, created["key_id"]).key_hash == hash_key(created["key"])


def test_create_stores_every_option(run: Run, store: KeyStore) -> None:
    created = create(
        run,
        "--username",
        "bob@example.com",
        "--team",
        "search",
        "--budget",
        "25.50",
        "--model",
        "anthropic.claude-*",
        "--model",
        "*.anthropic.claude-*",
        "--expires",
        "2099-01-31T18:00:00+02:00",
        "--description",
        "relevance experiments",
    )
    record = record_of(store, created["key_id"])
    assert record.username == "bob@example.com"
    assert record.principal_id == "User::bob@example.com"
    assert record.team == "search"
    assert record.monthly_budget_usd == Decimal("25.50")
    assert record.allowed_models == ("anthropic.claude-*", "*.anthropic.claude-*")
    assert record.expires_at == datetime(2099, 1, 31, 16, tzinfo=UTC)
    assert record.description == "relevance experiments"
    assert record.status == "active"


def test_key_created_with_expires_is_allowed_until_then(run: Run, store: KeyStore) -> None:
    before = utcnow()
    created = create(run, "--username", "alice", "--expires", "30d")
    after = utcnow()
    record = record_of(store, created["key_id"])
    assert record.expires_at is not None
    # 30 days from a moment while the command ran, as the key's creation was.
    assert before <= record.created_at <= after
    assert before + timedelta(days=30) <= record.expires_at <= after + timedelta(days=30)
    assert decide(record, record.expires_at - timedelta(seconds=1)).allow
    denied = decide(record, record.expires_at)
    assert not denied.allow
    assert denied.reason == "expired key"


def test_key_expiring_on_a_date_expires_at_midnight_utc(run: Run, store: KeyStore) -> None:
    created = create(run, "--username", "alice", "--expires", "2099-06-01")
    assert record_of(store, created["key_id"]).expires_at == datetime(2099, 6, 1, tzinfo=UTC)


# --- list ---


def test_list_shows_keys_without_secrets_or_hashes(run: Run, store: KeyStore) -> None:
    alice = create(
        run, "--username", "alice", "--team", "search", "--budget", "10", "--model", "amazon.nova-*"
    )
    bob = create(run, "--username", "bob")
    result = run("keys", "list")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split("  ")[0] == "KEY ID"
    for header in ("USERNAME", "TEAM", "STATUS", "CREATED", "EXPIRES", "BUDGET USD", "MODELS", "DESCRIPTION"):
        assert header in lines[0]
    assert set(lines[1]) <= {"-", " "}
    assert alice["key_id"] in result.out and bob["key_id"] in result.out
    assert "amazon.nova-*" in result.out
    for created in (alice, bob):
        assert created["key"] not in result.out
        assert record_of(store, created["key_id"]).key_hash not in result.out


def test_list_json_is_a_list_of_objects_without_hashes(run: Run) -> None:
    alice = create(run, "--username", "alice", "--budget", "12.5")
    rows = run("keys", "list", "--format", "json").json()
    assert isinstance(rows, list) and len(rows) == 1
    row = rows[0]
    assert row["key_id"] == alice["key_id"]
    assert row["monthly_budget_usd"] == "12.5"
    assert row["status"] == "active"
    assert not any("hash" in name.lower() for name in row)
    assert alice["key"] not in json.dumps(rows)


def test_list_filters_by_status(run: Run, store: KeyStore) -> None:
    active = create(run, "--username", "alice")
    revoked = create(run, "--username", "bob")
    expired = create(run, "--username", "carol")
    assert run("keys", "revoke", revoked["key_id"]).code == 0
    # Expiry must be in the future on the command line; age it in the table instead.
    record = record_of(store, expired["key_id"])
    store.save(KeyRecord(**{**_fields(record), "expires_at": utcnow() - timedelta(minutes=1)}))

    def ids(status: str) -> set[str]:
        result = run("keys", "list", "--status", status, "--format", "json")
        assert result.code == 0
        return {row["key_id"] for row in result.json()}

    assert ids("active") == {active["key_id"]}
    assert ids("revoked") == {revoked["key_id"]}
    assert ids("expired") == {expired["key_id"]}
    assert ids("all") == {active["key_id"], revoked["key_id"], expired["key_id"]}


def test_list_filters_by_username(run: Run) -> None:
    alice = create(run, "--username", "alice")
    create(run, "--username", "bob")
    rows = run("keys", "list", "--username", "alice", "--format", "json").json()
    assert [row["key_id"] for row in rows] == [alice["key_id"]]


def test_list_csv_has_header_and_rows(run: Run) -> None:
    alice = create(run, "--username", "alice")
    lines = run("keys", "list", "--format", "csv").out.splitlines()
    assert lines[0] == "KEY ID,USERNAME,TEAM,STATUS,CREATED,EXPIRES,BUDGET USD,IN FLIGHT,MODELS,DESCRIPTION"
    assert lines[1].startswith(f"{alice['key_id']},alice,,active,")


def test_list_of_an_empty_table_says_so(run: Run) -> None:
    result = run("keys", "list")
    assert (result.code, result.out.strip()) == (0, "no keys")


# --- show ---


def test_show_gives_fields_and_month_to_date_spend(run: Run, endpoint: str) -> None:
    alice = create(run, "--username", "alice", "--team", "search", "--budget", "5")
    ledger = Ledger(
        USAGE_TABLE, client=boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    )
    ledger.record(_usage_record("req-1", Decimal("1234567.5")))
    result = run("keys", "show", alice["key_id"], "--format", "json")
    assert result.code == 0
    data = result.json()
    assert data["key_id"] == alice["key_id"]
    assert data["principal"] == "User::alice"
    assert data["team"] == "search"
    assert data["monthly_budget_usd"] == "5"
    assert data["month"] == utcnow().strftime("%Y-%m")
    assert data["month_spend_usd"] == "1.234568"
    assert alice["key"] not in result.out
    table = run("keys", "show", alice["key_id"])
    assert "1.234568" in table.out
    assert "models" in table.out and "any" in table.out


def test_show_without_a_usage_table_says_n_a(run_bare: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.KEYS_TABLE_ENV, KEY_TABLE)
    alice = create(run_bare, "--username", "alice")
    stub_stack(monkeypatch, error="ValidationError")
    result = run_bare("keys", "show", alice["key_id"])
    assert result.code == 0, result.err
    assert "n/a" in result.out


def test_show_unknown_key_is_an_error(run: Run) -> None:
    result = run("keys", "show", "kid_000000000000")
    assert result.code == 1
    assert result.err.startswith("error: no key with id kid_000000000000")
    assert "Traceback" not in result.err


# --- update ---


def test_update_sets_each_field(run: Run, store: KeyStore) -> None:
    alice = create(run, "--username", "alice")
    result = run(
        "keys",
        "update",
        alice["key_id"],
        "--budget",
        "100",
        "--model",
        "amazon.nova-*",
        "--model",
        "*.amazon.nova-*",
        "--expires",
        "2099-12-31",
        "--description",
        "nova only",
    )
    assert result.code == 0, result.err
    record = record_of(store, alice["key_id"])
    assert record.monthly_budget_usd == Decimal(100)
    assert record.allowed_models == ("amazon.nova-*", "*.amazon.nova-*")
    assert record.expires_at == datetime(2099, 12, 31, tzinfo=UTC)
    assert record.description == "nova only"
    assert record.key_hash == hash_key(alice["key"])  # the key itself is unchanged


def test_update_changes_only_what_is_given(run: Run, store: KeyStore) -> None:
    alice = create(run, "--username", "alice", "--budget", "5", "--model", "a.*", "--description", "d")
    assert run("keys", "update", alice["key_id"], "--budget", "7").code == 0
    record = record_of(store, alice["key_id"])
    assert (record.monthly_budget_usd, record.allowed_models, record.description) == (
        Decimal(7),
        ("a.*",),
        "d",
    )


def test_update_none_never_and_clear_remove_limits(run: Run, store: KeyStore) -> None:
    alice = create(run, "--username", "alice", "--budget", "5", "--model", "a.*", "--expires", "10d")
    result = run(
        "keys", "update", alice["key_id"], "--budget", "none", "--expires", "never", "--clear-models"
    )
    assert result.code == 0, result.err
    record = record_of(store, alice["key_id"])
    assert record.monthly_budget_usd is None
    assert record.expires_at is None
    assert record.allowed_models == ()
    assert "budget USD/month: 5 -> -" in result.out


def test_update_needs_a_change(run: Run) -> None:
    alice = create(run, "--username", "alice")
    result = run("keys", "update", alice["key_id"])
    assert result.code == 2
    assert "nothing to change" in result.err


def test_update_refuses_models_and_clear_models_together(run: Run) -> None:
    result = run("keys", "update", "kid_000000000000", "--model", "a.*", "--clear-models")
    assert result.code == 2
    assert "not allowed with argument" in result.err


def test_update_unknown_key_is_an_error(run: Run) -> None:
    result = run("keys", "update", "kid_000000000000", "--budget", "1")
    assert result.code == 1
    assert "no key with id kid_000000000000" in result.err


# --- revoke ---


def test_revoke_denies_the_key(run: Run, store: KeyStore) -> None:
    alice = create(run, "--username", "alice")
    result = run("keys", "revoke", alice["key_id"])
    assert result.code == 0
    assert "Revoked" in result.out
    record = record_of(store, alice["key_id"])
    assert record.status == "revoked"
    assert record.revoked_at is not None
    decision = decide(store.get_by_hash(hash_key(alice["key"])), utcnow())
    assert not decision.allow
    assert decision.reason == "revoked key"


def test_revoke_twice_is_fine(run: Run, store: KeyStore) -> None:
    alice = create(run, "--username", "alice")
    assert run("keys", "revoke", alice["key_id"]).code == 0
    first = record_of(store, alice["key_id"]).revoked_at
    again = run("keys", "revoke", alice["key_id"])
    assert again.code == 0
    assert "already revoked" in again.out
    assert record_of(store, alice["key_id"]).revoked_at == first


def test_revoke_unknown_key_is_an_error(run: Run) -> None:
    result = run("keys", "revoke", "kid_000000000000")
    assert result.code == 1
    assert "no key with id" in result.err


# --- rotate ---


def test_rotate_with_grace_keeps_the_old_key_until_the_grace_ends(run: Run, store: KeyStore) -> None:
    old = create(run, "--username", "alice", "--team", "search", "--budget", "9", "--model", "a.*")
    before = utcnow()
    result = run("keys", "rotate", old["key_id"], "--grace", "2h", "--format", "json")
    assert result.code == 0, result.err
    new = result.json()
    assert new["key_id"] != old["key_id"]
    assert result.out.count(new["key"]) == 1
    old_record = store.get_by_hash(hash_key(old["key"]))
    new_record = store.get_by_hash(hash_key(new["key"]))
    assert old_record is not None and new_record is not None
    assert old_record.replaced_by == new["key_id"]
    assert old_record.expires_at is not None
    grace_end = old_record.expires_at
    assert before + timedelta(hours=2) <= grace_end <= utcnow() + timedelta(hours=2)
    assert decide(old_record, grace_end - timedelta(minutes=1)).allow
    assert not decide(old_record, grace_end + timedelta(seconds=1)).allow
    assert decide(new_record, grace_end + timedelta(days=1)).allow
    for name in ("username", "team", "monthly_budget_usd", "allowed_models", "description"):
        assert getattr(new_record, name) == getattr(old_record, name)


def test_rotate_with_zero_grace_revokes_the_old_key(run: Run, store: KeyStore) -> None:
    old = create(run, "--username", "alice")
    result = run("keys", "rotate", old["key_id"], "--grace", "0")
    assert result.code == 0, result.err
    assert "revoked now" in result.out
    old_record = record_of(store, old["key_id"])
    assert old_record.status == "revoked"
    assert not decide(old_record, utcnow()).allow
    new_key = next(word for word in result.out.split() if word.startswith("bsk_"))
    assert decide(store.get_by_hash(hash_key(new_key)), utcnow()).allow


def test_rotate_never_extends_the_old_key(run: Run, store: KeyStore) -> None:
    old = create(run, "--username", "alice", "--expires", "1h")
    expires = record_of(store, old["key_id"]).expires_at
    new = run("keys", "rotate", old["key_id"], "--grace", "30d", "--format", "json").json()
    assert record_of(store, old["key_id"]).expires_at == expires
    # The new key keeps the owner's end date.
    assert record_of(store, new["key_id"]).expires_at == expires


def test_rotate_refuses_a_revoked_key(run: Run, store: KeyStore) -> None:
    old = create(run, "--username", "alice")
    run("keys", "revoke", old["key_id"])
    result = run("keys", "rotate", old["key_id"], "--grace", "1h")
    assert result.code == 1
    assert "is revoked" in result.err
    assert "bsk_" not in result.out
    assert len(list(store.scan())) == 1


def test_rotate_refuses_a_key_already_rotated(run: Run) -> None:
    old = create(run, "--username", "alice")
    new = run("keys", "rotate", old["key_id"], "--grace", "1h", "--format", "json").json()
    result = run("keys", "rotate", old["key_id"], "--grace", "1h")
    assert result.code == 1
    assert f"already rotated to {new['key_id']}" in result.err


def test_rotate_needs_a_grace(run: Run) -> None:
    result = run("keys", "rotate", "kid_000000000000")
    assert result.code == 2
    assert "--grace" in result.err


def test_rotate_unknown_key_is_an_error(run: Run) -> None:
    result = run("keys", "rotate", "kid_000000000000", "--grace", "1h")
    assert result.code == 1
    assert "no key with id" in result.err


# --- bad input ---


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keys", "create"], "--username"),
        (["keys", "create", "--username", "al ice"], "invalid username"),
        (["keys", "create", "--username", "x" * 129], "invalid username"),
        (["keys", "create", "--username", "a", "--budget", "-5"], "invalid budget"),
        (["keys", "create", "--username", "a", "--budget", "0"], "greater than 0"),
        (["keys", "create", "--username", "a", "--budget", "ten"], "invalid budget"),
        (["keys", "create", "--username", "a", "--expires", "2001-01-01"], "not in the future"),
        (["keys", "create", "--username", "a", "--expires", "soon"], "invalid time"),
        (["keys", "create", "--username", "a", "--model", "has space"], "invalid model pattern"),
        (["keys", "list", "--status", "gone"], "invalid choice"),
        (["keys", "show", "not-a-key-id"], "invalid key id"),
        (["keys", "rotate", "kid_000000000000", "--grace", "2 days"], "invalid duration"),
        (["keys", "update", "kid_000000000000", "--budget", "lots"], "invalid budget"),
        (["usage", "--month", "2026-13"], "invalid month"),
        (["--format", "yaml", "keys", "list"], "invalid choice"),
    ],
)
def test_bad_input_is_a_usage_error(run: Run, argv: list[str], message: str) -> None:
    result = run(*argv)
    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err


def test_a_secret_given_as_key_id_is_refused_and_not_echoed(run: Run) -> None:
    secret = "bsk_" + "A" * 43
    result = run("keys", "show", secret)
    assert result.code == 2
    assert "secret API key" in result.err
    assert secret not in result.out + result.err


# --- table resolution and AWS errors ---


def stub_stack(
    monkeypatch: pytest.MonkeyPatch,
    outputs: dict[str, str] | None = None,
    *,
    stack: str = "bedrock-spend",
    error: str | None = None,
) -> Stubber:
    """Answer DescribeStacks from a Stubber: moto's CloudFormation is not in this server."""
    client = boto3.client("cloudformation", region_name="us-east-1")
    stubber = Stubber(client)
    if error:
        stubber.add_client_error(
            "describe_stacks",
            error,
            f"Stack with id {stack} does not exist",
            expected_params={"StackName": stack},
        )
    elif outputs is not None:
        stubber.add_response(
            "describe_stacks",
            {
                "Stacks": [
                    {
                        "StackName": stack,
                        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
                        "StackStatus": "CREATE_COMPLETE",
                        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
                    }
                ]
            },
            {"StackName": stack},
        )
    stubber.activate()
    real_client = config.Aws.client

    def client_for(self: config.Aws, service: str) -> Any:
        return client if service == "cloudformation" else real_client(self, service)

    monkeypatch.setattr(config.Aws, "client", client_for)
    return stubber


@pytest.fixture
def one_key(run: Run) -> Iterator[str]:
    yield create(run, "--username", "alice")["key_id"]


def test_table_flag_wins_over_env_and_stack(
    run_bare: Run, one_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.KEYS_TABLE_ENV, "no-such-table")
    stubber = stub_stack(monkeypatch)  # any DescribeStacks call would fail the test
    result = run_bare("--keys-table", KEY_TABLE, "keys", "list")
    assert result.code == 0, result.err
    assert one_key in result.out
    stubber.assert_no_pending_responses()


def test_table_env_var_wins_over_stack(run_bare: Run, one_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.KEYS_TABLE_ENV, KEY_TABLE)
    monkeypatch.setenv(config.USAGE_TABLE_ENV, USAGE_TABLE)
    stub_stack(monkeypatch)
    result = run_bare("keys", "show", one_key, "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["month_spend_usd"] == "0.000000"


def test_tables_come_from_the_stack_outputs(
    run_bare: Run, one_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubber = stub_stack(
        monkeypatch,
        {"ApiKeyTableName": KEY_TABLE, "UsageTableName": USAGE_TABLE, "ApiEndpoint": "https://x"},
        stack="spend-prod",
    )
    result = run_bare("--stack", "spend-prod", "keys", "show", one_key, "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["month_spend_usd"] == "0.000000"  # usage table from the same, single call
    stubber.assert_no_pending_responses()


def test_no_table_anywhere_is_a_one_line_error(run_bare: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    stub_stack(monkeypatch, error="ValidationError")
    result = run_bare("keys", "list")
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert result.err.startswith(
        "error: no API key table: pass --keys-table NAME, set BEDROCK_SPEND_KEYS_TABLE"
    )
    assert "does not exist" in result.err


def test_stack_without_the_output_is_explained(run_bare: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    stub_stack(monkeypatch, {"ApiEndpoint": "https://x"})
    result = run_bare("usage")
    assert result.code == 1
    assert "has no output UsageTableName" in result.err


def test_missing_table_is_a_readable_aws_error(run_bare: Run) -> None:
    result = run_bare("--keys-table", "no-such-table", "keys", "list")
    assert result.code == 1
    assert result.err.startswith("error: Scan failed: ResourceNotFoundException")
    assert "Traceback" not in result.err


def test_unreachable_endpoint_is_a_readable_error(capsys: pytest.CaptureFixture[str], endpoint: str) -> None:
    code = main(["--endpoint-url", "http://127.0.0.1:9", "--keys-table", KEY_TABLE, "keys", "list"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: could not connect to http://127.0.0.1:9")


def test_missing_credentials_are_a_readable_error(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    result = run("keys", "list")
    assert result.code == 1
    assert result.err.startswith("error: no AWS credentials found")


# --- helpers ---


def _fields(record: KeyRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in KeyRecord.__dataclass_fields__}


def _usage_record(request_id: str, cost_micro: Decimal) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        requested_at=utcnow(),
        caller=Caller(principal_id="User::alice", key_id="kid_x", username="alice"),
        operation="InvokeModel",
        model_id="anthropic.claude-3-haiku-20240307-v1:0",
        base_model="anthropic.claude-3-haiku-20240307-v1:0",
        region="us-east-1",
        usage=Usage(input_tokens=10, output_tokens=5, source="anthropic"),
        cost=Cost(priced=True, price_book_version="test", input=cost_micro),
    )


def test_a_key_carries_its_in_flight_cap_to_the_authorizer(run: Run) -> None:
    from bedrock_spend.authorizer.service import authorize

    created = run("keys", "create", "--username", "cap", "--max-in-flight", "2", "--format", "json").json()
    assert authorize(created["key"]).context["maxInFlight"] == "2"
    assert run("keys", "update", created["key_id"], "--max-in-flight", "default").code == 0
    assert run("keys", "show", created["key_id"], "--format", "json").json()["max_in_flight"] is None
    bad = run("keys", "update", created["key_id"], "--max-in-flight", "0")
    assert bad.code == 2 and "whole number from 1 to 1000" in bad.err
