from bedrock_spend import aws


def test_request_path_clients_have_bounded_retries_and_timeouts(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws.client.cache_clear()
    try:
        for service in ("dynamodb", "bedrock"):
            config = aws.client(service).meta.config
            assert config.retries == {"total_max_attempts": 2, "mode": "standard"}
            assert config.connect_timeout <= 1 and config.read_timeout <= 2
    finally:
        aws.client.cache_clear()
