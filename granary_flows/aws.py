"""AWS access through prefect-aws blocks: one `AwsCredentials` for Batch, CloudWatch Logs and S3.

The block is named by `GRANARY_AWS_CREDENTIALS_BLOCK`; without one, boto3's own chain applies (environment, profile,
instance role), and `AWS_ENDPOINT_URL` is honoured. A block's `aws_client_parameters.endpoint_url` points every client
at moto, LocalStack or an on-premises S3.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, cast

from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from prefect_aws import AwsCredentials

from granary_flows.errors import RuntimeUnavailable

CREDENTIALS_BLOCK_VARIABLE = "GRANARY_AWS_CREDENTIALS_BLOCK"
# An unreachable endpoint must fail a submission in seconds, not after botocore's 60 s connect timeout times 5.
DEFAULT_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
AUTHENTICATION_CODES = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "AccessDenied",
    "AccessDeniedException",
}

_clients: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def configured_block() -> str | None:
    """The `AwsCredentials` block this process is configured with, if any."""
    return os.environ.get(CREDENTIALS_BLOCK_VARIABLE) or None


def credentials(block: str | None = None) -> AwsCredentials:
    """The `AwsCredentials` block named `block` (default `$GRANARY_AWS_CREDENTIALS_BLOCK`), else boto3's chain.

    Raises:
        RuntimeUnavailable: when the named block does not exist.
    """
    block = block or os.environ.get(CREDENTIALS_BLOCK_VARIABLE)
    if not block:
        return AwsCredentials()
    try:
        return cast(AwsCredentials, AwsCredentials.load(block))
    except ValueError as err:
        raise RuntimeUnavailable(f"AwsCredentials block {block!r} cannot be loaded: {err}") from err


def client(service: str, block: str | None = None) -> Any:
    """A boto3 client for `service`, shared by the threads of this process (boto3 clients are thread-safe)."""
    block = block or os.environ.get(CREDENTIALS_BLOCK_VARIABLE) or ""
    with _lock:
        if (block, service) not in _clients:
            aws = credentials(block or None)
            parameters = aws.aws_client_parameters.get_params_override()
            given = parameters.get("config")
            parameters["config"] = DEFAULT_CONFIG.merge(given) if given else DEFAULT_CONFIG
            _clients[(block, service)] = aws.get_boto3_session().client(service, **parameters)
        return _clients[(block, service)]


def endpoint_of(aws_client: Any) -> str:
    return str(aws_client.meta.endpoint_url)


def s3_storage_options(aws: AwsCredentials) -> dict[str, Any]:
    """s3fs options that use the same credentials and endpoint as the block."""
    secret = aws.aws_secret_access_key.get_secret_value() if aws.aws_secret_access_key else None
    client_kwargs = {"region_name": aws.region_name, "endpoint_url": aws.aws_client_parameters.endpoint_url}
    options: dict[str, Any] = {
        "key": aws.aws_access_key_id,
        "secret": secret,
        "token": aws.aws_session_token,
        "profile": aws.profile_name,
        "client_kwargs": {k: v for k, v in client_kwargs.items() if v},
    }
    return {k: v for k, v in options.items() if v}


def describe_error(err: Exception, doing: str, endpoint: str) -> str:
    """One sentence a user can act on, for an AWS call that failed."""
    if isinstance(err, EndpointConnectionError):
        return f"{doing} failed: no AWS endpoint answers at {endpoint}"
    if isinstance(err, NoCredentialsError):
        return f"{doing} failed: no AWS credentials (set {CREDENTIALS_BLOCK_VARIABLE} or the AWS_* variables)"
    if isinstance(err, ClientError):
        code, message = _code_and_message(err)
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in AUTHENTICATION_CODES or status in (401, 403):
            return f"{doing} failed: AWS refused the credentials at {endpoint} ({code}: {message})"
        return f"{doing} failed: {message}"
    return f"{doing} failed: {err}"


def _code_and_message(err: ClientError) -> tuple[str, str]:
    """The error's code and message; some stand-ins answer a JSON API with an XML error botocore cannot parse."""
    error = err.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", err))
    if "<Code>" in message:
        code = re.search(r"<Code>(.*?)</Code>", message).group(1)  # type: ignore[union-attr]
        found = re.search(r"<Message>(.*?)</Message>", message)
        message = found.group(1) if found else message
    return code, message
