#!/bin/sh
# Started by the Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap): serves the proxy
# app on the port the adapter forwards to. One worker: Lambda runs one request per environment.
exec python3 -m uvicorn bedrock_spend.proxy.app:app \
    --host 127.0.0.1 --port "${AWS_LWA_PORT:-8080}" --workers 1 --no-access-log --log-level warning
